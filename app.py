"""`python app.py` from a clone, the same as the installed `glcic-app`: see glcic_tf/commands/app.py."""

from glcic_tf.commands.app import run

if __name__ == "__main__":
    run()

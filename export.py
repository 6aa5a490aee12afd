"""`python export.py` from a clone, the same as the installed `glcic-export`: see glcic_tf/commands/export.py."""

from glcic_tf.commands.export import run

if __name__ == "__main__":
    run()

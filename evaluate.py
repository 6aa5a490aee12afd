"""`python evaluate.py` from a clone, the same as the installed `glcic-evaluate`: see glcic_tf/commands/evaluate.py."""

from glcic_tf.commands.evaluate import run

if __name__ == "__main__":
    run()

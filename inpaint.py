"""`python inpaint.py` from a clone, the same as the installed `glcic-inpaint`: see glcic_tf/commands/inpaint.py."""

from glcic_tf.commands.inpaint import run

if __name__ == "__main__":
    run()

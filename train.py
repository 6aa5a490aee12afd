"""`python train.py` from a clone, the same as the installed `glcic-train`: see glcic_tf/commands/train.py."""

from glcic_tf.commands.train import run

if __name__ == "__main__":
    run()

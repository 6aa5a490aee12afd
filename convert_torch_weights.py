"""`python convert_torch_weights.py` from a clone, the same as the installed `glcic-convert-torch-weights`: see glcic_tf/commands/convert_torch_weights.py."""

from glcic_tf.commands.convert_torch_weights import run

if __name__ == "__main__":
    run()

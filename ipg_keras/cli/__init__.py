"""Command-line tools: `ipg-export` (SavedModel / TFLite) and `ipg-predict` (inference on image files)."""

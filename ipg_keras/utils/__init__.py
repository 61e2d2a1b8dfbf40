"""Small helpers shared by every part of the package (no model or data logic)."""

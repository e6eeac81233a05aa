"""Difference imaging: PSF matching, subtraction and detection."""

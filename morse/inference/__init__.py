"""Inference: whole volumes (slices or sliding windows), files on disk, trained runs."""

"""Preprocessing: dataset readers, face alignment, optical flow and strain, the HDF5 cache."""

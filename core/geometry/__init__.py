"""Geometry as a library of pure functions (numpy or torch, no network): rays and point normalisation,
cameras from points, alignment, ray tracing of triangle meshes, and grid meshes from layers."""

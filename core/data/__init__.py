"""Ground-truth data: Blender scene recipes, the multi-hit tracer, shards and their reader."""

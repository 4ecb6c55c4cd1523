"""The result's data blocks shared by its kinds of geometry: the packed image and unlit materials."""

from __future__ import annotations

import bpy
import numpy as np

TINT_STRENGTH = 0.55  # hidden layers: how far their colour moves toward the layer's tint


def image_from_array(name: str, rgb: np.ndarray) -> bpy.types.Image:
    """A packed Blender image from (H, W, 3) uint8 (top row first)."""
    H, W = rgb.shape[:2]
    image = bpy.data.images.new(name, W, H, alpha=False)
    rgba = np.concatenate([rgb, np.full((H, W, 1), 255, np.uint8)], axis=-1)[::-1]
    image.pixels.foreach_set((rgba.astype(np.float32) / 255.0).ravel())
    image.pack()
    image["wt_generated"] = True  # ours to delete with the result
    return image


def emission_material(name: str, image: bpy.types.Image | None, tint: np.ndarray | None) -> bpy.types.Material:
    """Unlit material showing the image: through UVs (`image` given) or the `wt_color` attribute.

    With `tint`, the colour is mixed toward it (hidden layers: what the model invented).
    """
    mat = bpy.data.materials.new(name)
    if mat.node_tree is None:  # Blender < 5.0 creates materials without nodes
        mat.use_nodes = True
    nodes, links = mat.node_tree.nodes, mat.node_tree.links
    nodes.clear()
    out = nodes.new("ShaderNodeOutputMaterial")
    emit = nodes.new("ShaderNodeEmission")
    if image is not None:
        colour = nodes.new("ShaderNodeTexImage")
        colour.image = image
        colour.interpolation = "Closest"
        socket = colour.outputs["Color"]
    else:
        colour = nodes.new("ShaderNodeAttribute")
        colour.attribute_type = "GEOMETRY"
        colour.attribute_name = "wt_color"
        socket = colour.outputs["Color"]
    if tint is not None:
        mix = nodes.new("ShaderNodeMix")
        mix.data_type = "RGBA"
        mix.inputs["Factor"].default_value = TINT_STRENGTH
        links.new(socket, mix.inputs["A"])
        mix.inputs["B"].default_value = (*tint.tolist(), 1.0)
        socket = mix.outputs["Result"]
    links.new(socket, emit.inputs["Color"])
    links.new(emit.outputs["Emission"], out.inputs["Surface"])
    return mat

"""The solid of a result in Blender (main thread only): one watertight mesh with the image projected on it.

The voxels between each ray's entry and exit layers (`core.geometry.occupancy`) become a mesh through
Blender's own volume nodes (Points to Volume → Volume to Mesh, then a light positional blur), evaluated
once and kept as a plain, editable mesh. Faces that are seen by the matched camera on the visible
surface show the image through UVs projected from that camera (`projected_uvs`), so a render through
it reproduces the image; the hidden rest gets a neutral clay material or the colour of the pixel in
front of it.
Every vertex carries wt_layer and wt_pixel of its nearest source point, and wt_color.
"""

from __future__ import annotations

import bpy
import numpy as np
from mathutils.kdtree import KDTree

from ..core.geometry.meshing import pixels_to_uvs
from ..core.geometry.occupancy import OccupancyGrid, occupancy_grid, paired_layers, project_to_pixels
from ..core.layered import LayeredPointMap
from .materials import emission_material

HIDDEN_MATERIALS = ("NEUTRAL", "NEAREST")  # hidden faces: grey clay, or the colour of the pixel in front
SMOOTH_ITERATIONS = 3  # positional blur after meshing: no voxel stair steps
MAX_NEAREST_SOURCES = 200_000  # source points searched for each vertex's wt_layer / wt_pixel (a strided subset)
NEUTRAL_GREY = (0.6, 0.6, 0.6, 1.0)


def set_voxel_size(node: bpy.types.Node, size: float) -> None:
    """Give a volume node a fixed voxel size (a menu socket from Blender 5.0, a node property before)."""
    if "Resolution Mode" in node.inputs:
        node.inputs["Resolution Mode"].default_value = "Size"
    else:
        node.resolution_mode = "VOXEL_SIZE"
    node.inputs["Voxel Size"].default_value = size


def voxels_to_surface_group(voxel_size: float) -> bpy.types.NodeTree:
    """Geometry nodes: points at inside-voxel centres → a fog volume of touching balls → its 0.5 level
    surface at the same voxel size → positions blurred SMOOTH_ITERATIONS times (closed, manifold)."""
    group = bpy.data.node_groups.new("WT Voxels to Solid", "GeometryNodeTree")
    group.interface.new_socket("Geometry", in_out="INPUT", socket_type="NodeSocketGeometry")
    group.interface.new_socket("Geometry", in_out="OUTPUT", socket_type="NodeSocketGeometry")
    nodes, links = group.nodes, group.links
    gin, gout = nodes.new("NodeGroupInput"), nodes.new("NodeGroupOutput")
    to_volume = nodes.new("GeometryNodePointsToVolume")
    set_voxel_size(to_volume, voxel_size)
    to_volume.inputs["Density"].default_value = 1.0
    to_volume.inputs["Radius"].default_value = voxel_size  # balls reach past their neighbours: no gaps
    to_mesh = nodes.new("GeometryNodeVolumeToMesh")
    set_voxel_size(to_mesh, voxel_size)
    to_mesh.inputs["Threshold"].default_value = 0.5
    blur = nodes.new("GeometryNodeBlurAttribute")
    blur.data_type = "FLOAT_VECTOR"
    blur.inputs["Iterations"].default_value = SMOOTH_ITERATIONS
    position = nodes.new("GeometryNodeInputPosition")
    set_position = nodes.new("GeometryNodeSetPosition")
    links.new(gin.outputs["Geometry"], to_volume.inputs["Points"])
    links.new(to_volume.outputs["Volume"], to_mesh.inputs["Volume"])
    links.new(position.outputs["Position"], blur.inputs[0])
    links.new(to_mesh.outputs["Mesh"], set_position.inputs["Geometry"])
    links.new(blur.outputs[0], set_position.inputs["Position"])
    links.new(set_position.outputs["Geometry"], gout.inputs["Geometry"])
    return group


def surface_mesh(name: str, centres: np.ndarray, voxel_size: float) -> bpy.types.Mesh:
    """The closed surface around voxel centres (N, 3) in world coordinates, as a new plain mesh.

    Evaluates the node group on a temporary object in the scene, which is removed again with its group.
    """
    scratch = bpy.data.meshes.new(f"{name} voxels")
    scratch.vertices.add(len(centres))
    scratch.attributes["position"].data.foreach_set("vector", centres.astype(np.float32).ravel())
    obj = bpy.data.objects.new(f"{name} voxels", scratch)
    group = voxels_to_surface_group(voxel_size)
    try:
        obj.modifiers.new("Solid", "NODES").node_group = group
        bpy.context.scene.collection.objects.link(obj)
        evaluated = obj.evaluated_get(bpy.context.evaluated_depsgraph_get())
        mesh = bpy.data.meshes.new_from_object(evaluated)
        mesh.name = name
    finally:
        bpy.data.objects.remove(obj)
        bpy.data.meshes.remove(scratch)
        bpy.data.node_groups.remove(group)
    return mesh


def nearest_sources(lpm: LayeredPointMap, vertices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """wt_layer and wt_pixel (N,) int32 of each camera-space vertex (N, 3): those of its nearest paired
    source point (at most MAX_NEAREST_SOURCES of them, evenly strided, are searched)."""
    layer, row, col = np.nonzero(paired_layers(lpm.valid))
    stride = max(1, -(-len(layer) // MAX_NEAREST_SOURCES))
    layer, row, col = layer[::stride], row[::stride], col[::stride]
    tree = KDTree(len(layer))
    for i, co in enumerate(lpm.points[layer, row, col].tolist()):
        tree.insert(co, i)
    tree.balance()
    nearest = np.fromiter((tree.find(co)[1] for co in vertices.tolist()), np.int64, len(vertices))
    return layer[nearest].astype(np.int32), (row * lpm.width + col)[nearest].astype(np.int32)


def hidden_material(name: str, kind: str) -> bpy.types.Material:
    """The material of the solid's hidden faces: grey clay (NEUTRAL) or the wt_color attribute, unlit (NEAREST)."""
    if kind == "NEAREST":
        return emission_material(name, None, None)
    mat = bpy.data.materials.new(name)
    if mat.node_tree is None:  # Blender < 5.0 creates materials without nodes
        mat.use_nodes = True
    mat.node_tree.nodes["Principled BSDF"].inputs["Base Color"].default_value = NEUTRAL_GREY
    mat.diffuse_color = NEUTRAL_GREY
    return mat


def solid_voxels(lpm: LayeredPointMap, divisions: int, hidden: str) -> OccupancyGrid:
    """The voxels of a result's solid, `divisions` along the diagonal of its bounding box: made before any
    data block, so that what cannot become a solid is refused with nothing built. Raises ValueError for a
    result without a ray of two layers, a grid of more than MAX_VOXELS voxels or without one voxel
    inside, and for an unknown `hidden`."""
    if hidden not in HIDDEN_MATERIALS:
        raise ValueError(f"unknown hidden material {hidden!r}; choose from {', '.join(HIDDEN_MATERIALS)}")
    grid = occupancy_grid(lpm.points, lpm.valid, lpm.intrinsics, divisions=divisions)
    if not grid.inside.any():
        raise ValueError(thinner_than_voxels(grid))
    return grid


def thinner_than_voxels(grid: OccupancyGrid) -> str:
    return f"the solid is thinner than its voxels ({grid.voxel_size:.3g}); raise the detail"


def solid_object(
    name: str, lpm: LayeredPointMap, grid: OccupancyGrid, image: bpy.types.Image, hidden: str, max_faces: int
) -> bpy.types.Object:
    """One watertight mesh object of the solid in `grid` (from `solid_voxels`; module docstring).

    hidden: one of HIDDEN_MATERIALS; above max_faces faces a Decimate modifier brings the count down (it
    stays editable). Raises ValueError, with nothing left behind, when no surface comes out.
    """
    k, j, i = np.nonzero(grid.inside)
    centres = grid.origin + grid.voxel_size * np.stack([i, j, k], axis=1)  # OpenCV camera space
    mesh = surface_mesh(name, np.stack([centres[:, 0], centres[:, 2], -centres[:, 1]], axis=1), grid.voxel_size)
    try:
        if not len(mesh.polygons):
            raise ValueError(thinner_than_voxels(grid))
        decorate(mesh, lpm, image, hidden)
    except BaseException:
        bpy.data.meshes.remove(mesh)
        raise
    obj = bpy.data.objects.new(name, mesh)
    obj["wt_solid"] = True  # not a layer: result_layers passes it by
    if len(mesh.polygons) > max_faces:
        obj.modifiers.new("Decimate", "DECIMATE").ratio = max_faces / len(mesh.polygons)
    return obj


def projected_uvs(lpm: LayeredPointMap, cam: np.ndarray, nearest_pixel: np.ndarray) -> np.ndarray:
    """UVs (N, 2) float32 of camera-space vertices (N, 3): where they project in the image, so that the
    matched camera sees every vertex on its own pixel; a vertex that projects off the visible surface
    (the voxels reach a little past the silhouette) takes its nearest source pixel's centre instead of
    the background's colour."""
    p = cam.astype(np.float64) @ np.asarray(lpm.intrinsics, np.float64).T
    with np.errstate(divide="ignore", invalid="ignore"):
        uv = np.stack([p[:, 0] / p[:, 2] / lpm.width, 1.0 - p[:, 1] / p[:, 2] / lpm.height], axis=1)
    pixel, seen = project_to_pixels(cam, lpm.intrinsics, lpm.height, lpm.width)
    on_surface = seen & lpm.valid[0].reshape(-1)[pixel]
    return np.where(on_surface[:, None], uv, pixels_to_uvs(nearest_pixel, lpm.height, lpm.width)).astype(np.float32)


def decorate(mesh: bpy.types.Mesh, lpm: LayeredPointMap, image: bpy.types.Image, hidden: str) -> None:
    """Attributes, projected UVs, the two materials and their faces, smooth shading (see the module docstring)."""
    n = len(mesh.vertices)
    world = np.empty(n * 3, np.float32)
    mesh.attributes["position"].data.foreach_get("vector", world)
    world = world.reshape(-1, 3)
    cam = np.stack([world[:, 0], -world[:, 2], world[:, 1]], axis=1)  # back to OpenCV camera space
    layer, pixel = nearest_sources(lpm, cam)
    mesh.attributes.new("wt_layer", "INT", "POINT").data.foreach_set("value", layer)
    mesh.attributes.new("wt_pixel", "INT", "POINT").data.foreach_set("value", pixel)
    rgb = lpm.image.reshape(-1, 3)[pixel].astype(np.float32) / 255.0
    rgba = np.concatenate([rgb, np.ones((n, 1), np.float32)], axis=1)
    mesh.attributes.new("wt_color", "FLOAT_COLOR", "POINT").data.foreach_set("color_srgb", rgba.ravel())

    uv = projected_uvs(lpm, cam, pixel)
    loops = np.empty(len(mesh.loops), np.int32)
    mesh.attributes[".corner_vert"].data.foreach_get("value", loops)
    mesh.uv_layers.new(name="UVMap")
    mesh.attributes["UVMap"].data.foreach_set("vector", uv[loops].ravel())

    faces = len(mesh.polygons)
    normal, centre = np.empty(faces * 3, np.float32), np.empty(faces * 3, np.float32)
    mesh.polygons.foreach_get("normal", normal)
    mesh.polygons.foreach_get("center", centre)
    facing = (normal.reshape(-1, 3) * centre.reshape(-1, 3)).sum(axis=1) < 0  # the camera sits at the origin
    start = np.empty(faces, np.int32)
    mesh.polygons.foreach_get("loop_start", start)
    front = np.minimum.reduceat((layer[loops] == 0).astype(np.int8), start).astype(bool)
    mesh.polygons.foreach_set("material_index", np.where(facing & front, 0, 1).astype(np.int32))
    mesh.materials.clear()  # the evaluated geometry may come with an empty slot
    mesh.materials.append(emission_material(f"{mesh.name} visible", image, None))
    mesh.materials.append(hidden_material(f"{mesh.name} hidden", hidden))
    mesh.shade_smooth()
    mesh.update()

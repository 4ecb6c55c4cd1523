"""Build a traced result in Blender: a collection with the matched camera, per-layer point clouds
and meshes, optionally one solid, materials and a novel-view camera (main thread only).

Arrays go into meshes through their generic attributes ("position", ".corner_vert", the UV map's):
one copy each, many times faster than the per-element vertices/loops/uv_layers collections.

World frame: the matched camera sits at the origin looking along +Y with +Z up, so OpenCV
camera coordinates (x right, y down, z forward) map to world coordinates (x, z, -y). Geometry
objects keep identity transforms; every vertex carries `wt_layer`, `wt_pixel` (row·W + col),
`wt_color` and (points) `wt_radius`.
"""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING

import bpy
import numpy as np

from ..core.geometry.camera import blender_camera_to_intrinsics, intrinsics_to_blender_camera
from ..core.geometry.meshing import layer_to_grid_mesh
from ..core.geometry.occupancy import DIVISIONS
from ..core.layered import LAYER_COLOURS, LayeredPointMap
from .materials import TINT_STRENGTH, emission_material, image_from_array
from .solid import solid_object, solid_voxels

if TYPE_CHECKING:  # core.clip imports torch, which is loaded on the first trace only
    from ..core.clip import LayeredClip

PREFIX = "WT"
MAX_SOLID_FACES = 200_000
POINTS_GROUP = "WT Mesh to Points"
POINTS_MATERIAL = "WT Points"  # shared by every point cloud: colour from the wt_color attribute


@dataclass
class BuildOptions:
    output: str = "POINTS"  # "POINTS", "MESHES" or "BOTH"
    layers: tuple[int, ...] | None = None  # layers to build (None: all)
    max_rel_jump: float = 0.05  # meshes: cut triangles whose depth ratio exceeds 1 + this
    point_size: float = 1.0  # points: radius in pixel footprints (1 = each point covers its whole pixel)
    solid: bool = False  # also one watertight mesh of the whole result (operators/solid.py)
    solid_detail: int = DIVISIONS  # solid: voxels along the diagonal of its bounding box
    solid_hidden: str = "NEUTRAL"  # solid: hidden faces grey ("NEUTRAL") or the pixel's colour ("NEAREST")
    solid_max_faces: int = MAX_SOLID_FACES  # solid: above this a Decimate modifier thins it


def opencv_to_world(points: np.ndarray) -> np.ndarray:
    """(N, 3) OpenCV camera coordinates → world coordinates of the matched camera's frame."""
    return np.stack([points[:, 0], points[:, 2], -points[:, 1]], axis=1).astype(np.float32)


def result_name(source: str) -> str:
    """A new, unused collection name for a result of image `source`: 'WT <stem>', then 'WT <stem>.001', ...

    Stems are cut to 36 characters so every object name derived from it stays within Blender's 63.
    """
    base = f"{PREFIX} {source[:36]}"
    name, n = base, 0
    while bpy.data.collections.get(name) is not None:
        n += 1
        name = f"{base}.{n:03d}"
    return name


# ----------------------------------------------------------------------------------------------
# Data blocks
# ----------------------------------------------------------------------------------------------


def points_node_group() -> bpy.types.NodeTree:
    """Shared geometry nodes: mesh vertices → points of radius wt_radius × Point Size, with the shared
    points material (Mesh to Points drops the mesh's materials; colours come from wt_color)."""
    group = bpy.data.node_groups.get(POINTS_GROUP)
    if group is None:
        group = new_points_node_group()
    material = bpy.data.materials.get(POINTS_MATERIAL) or emission_material(POINTS_MATERIAL, None, None)
    group.nodes["Set Material"].inputs["Material"].default_value = material
    return group


def new_points_node_group() -> bpy.types.NodeTree:
    group = bpy.data.node_groups.new(POINTS_GROUP, "GeometryNodeTree")
    group.interface.new_socket("Geometry", in_out="INPUT", socket_type="NodeSocketGeometry")
    size = group.interface.new_socket("Point Size", in_out="INPUT", socket_type="NodeSocketFloat")
    size.default_value, size.min_value = 1.0, 0.0
    group.interface.new_socket("Geometry", in_out="OUTPUT", socket_type="NodeSocketGeometry")
    nodes, links = group.nodes, group.links
    gin, gout = nodes.new("NodeGroupInput"), nodes.new("NodeGroupOutput")
    radius = nodes.new("GeometryNodeInputNamedAttribute")
    radius.data_type = "FLOAT"
    radius.inputs["Name"].default_value = "wt_radius"
    scale = nodes.new("ShaderNodeMath")
    scale.operation = "MULTIPLY"
    to_points = nodes.new("GeometryNodeMeshToPoints")
    to_points.mode = "VERTICES"
    set_material = nodes.new("GeometryNodeSetMaterial")
    set_material.name = "Set Material"
    links.new(radius.outputs["Attribute"], scale.inputs[0])
    links.new(gin.outputs["Point Size"], scale.inputs[1])
    links.new(gin.outputs["Geometry"], to_points.inputs["Mesh"])
    links.new(scale.outputs["Value"], to_points.inputs["Radius"])
    links.new(to_points.outputs["Points"], set_material.inputs["Geometry"])
    links.new(set_material.outputs["Geometry"], gout.inputs["Geometry"])
    return group


def set_point_attributes(mesh: bpy.types.Mesh, layer: int, pixels: np.ndarray, colors: np.ndarray) -> None:
    """wt_layer, wt_pixel (INT) and wt_color (FLOAT_COLOR; `colors` are sRGB in [0, 1], stored linear)
    on every vertex."""
    n = len(pixels)
    mesh.attributes.new("wt_layer", "INT", "POINT").data.foreach_set("value", np.full(n, layer, np.int32))
    mesh.attributes.new("wt_pixel", "INT", "POINT").data.foreach_set("value", pixels.astype(np.int32))
    rgba = np.concatenate([colors, np.ones((n, 1), np.float32)], axis=1)
    mesh.attributes.new("wt_color", "FLOAT_COLOR", "POINT").data.foreach_set("color_srgb", rgba.ravel())


def layer_colors(lpm: LayeredPointMap, layer: int, pixels: np.ndarray) -> np.ndarray:
    """(N, 3) float colours of a layer's pixels: the image, tinted for hidden layers."""
    rgb = lpm.image.reshape(-1, 3)[pixels].astype(np.float32) / 255.0
    if layer > 0:
        rgb = rgb * (1 - TINT_STRENGTH) + LAYER_COLOURS[layer % len(LAYER_COLOURS)] * TINT_STRENGTH
    return rgb


def points_object(name: str, lpm: LayeredPointMap, layer: int, point_size: float) -> bpy.types.Object:
    """A vertex-only mesh of one layer's valid points, drawn as points by geometry nodes."""
    row, col = np.nonzero(lpm.valid[layer])
    pixels = row * lpm.width + col
    co = opencv_to_world(lpm.points[layer, row, col])
    mesh = bpy.data.meshes.new(name)
    mesh.vertices.add(len(co))
    mesh.attributes["position"].data.foreach_set("vector", co.ravel())
    set_point_attributes(mesh, layer, pixels, layer_colors(lpm, layer, pixels))
    footprint = lpm.points[layer, row, col, 2] / float(lpm.intrinsics[0, 0])  # one pixel's width at that depth
    radius = (0.5 * np.sqrt(2.0) * footprint).astype(np.float32)  # the disc through the pixel's corners
    mesh.attributes.new("wt_radius", "FLOAT", "POINT").data.foreach_set("value", radius)
    mesh.update()
    obj = bpy.data.objects.new(name, mesh)
    mod = obj.modifiers.new("Points", "NODES")
    mod.node_group = points_node_group()
    mod[mod.node_group.interface.items_tree["Point Size"].identifier] = point_size
    return obj


def mesh_object(name: str, lpm: LayeredPointMap, layer: int, max_rel_jump: float, material) -> bpy.types.Object:
    """One layer as a grid mesh of quads and triangles, with depth-jump cuts and image UVs."""
    grid = layer_to_grid_mesh(lpm.points[layer], lpm.valid[layer], layer, max_rel_jump)
    mesh = bpy.data.meshes.new(name)
    mesh.vertices.add(len(grid.vertices))
    mesh.attributes["position"].data.foreach_set("vector", opencv_to_world(grid.vertices).ravel())
    corners = np.concatenate([grid.quads.ravel(), grid.triangles.ravel()])  # int32: each polygon's vertices
    mesh.uv_layers.new(name="UVMap")
    if len(corners):  # (a mesh without corners has no corner attributes either)
        mesh.loops.add(len(corners))
        mesh.attributes[".corner_vert"].data.foreach_set("value", corners)
        mesh.polygons.add(len(grid.quads) + len(grid.triangles))
        starts = np.arange(0, len(grid.quads) * 4, 4, dtype=np.int32)
        mesh.polygons.foreach_set("loop_start", np.concatenate([starts, np.arange(len(starts) * 4, len(corners), 3)]))
        mesh.attributes["UVMap"].data.foreach_set("vector", grid.uvs[corners].ravel())
    set_point_attributes(mesh, layer, grid.pixels, layer_colors(lpm, layer, grid.pixels))
    mesh.materials.append(material)
    mesh.update()
    return bpy.data.objects.new(name, mesh)


# ----------------------------------------------------------------------------------------------
# Cameras
# ----------------------------------------------------------------------------------------------


def matched_camera(name: str, lpm: LayeredPointMap, image: bpy.types.Image) -> bpy.types.Object:
    """Camera at the origin looking along +Y reproducing the intrinsics, with the image as background."""
    cam = intrinsics_to_blender_camera(lpm.intrinsics, lpm.width, lpm.height)
    data = bpy.data.cameras.new(name)
    data.sensor_fit = cam.sensor_fit
    data.sensor_width = data.sensor_height = cam.sensor_size
    data.lens, data.shift_x, data.shift_y = cam.lens, cam.shift_x, cam.shift_y
    data.clip_start, data.clip_end = 0.01, 1000.0
    data.show_background_images = True
    background = data.background_images.new()
    background.image = image
    background.alpha = 0.6
    obj = bpy.data.objects.new(name, data)
    obj.rotation_euler = (math.pi / 2, 0.0, 0.0)
    return obj


def orbit_camera(
    name: str, source: bpy.types.Object, target: np.ndarray, swing_deg: float = 35.0, frames: int = 48
) -> tuple[bpy.types.Object, bpy.types.Object]:
    """A pivot at `target` and a camera on it that swings ±swing_deg around the result over `frames`."""
    pivot = bpy.data.objects.new(f"{name} pivot", None)
    pivot.empty_display_type = "SPHERE"
    pivot.empty_display_size = 0.05
    pivot.location = target.tolist()
    cam = bpy.data.objects.new(name, source.data.copy())
    cam.data.name = name
    cam.data.shift_x = cam.data.shift_y = 0.0
    cam.data.show_background_images = False
    cam.parent = pivot
    cam.location = (-target).tolist()  # the matched camera's position, seen from the pivot
    track = cam.constraints.new("TRACK_TO")
    track.target, track.track_axis, track.up_axis = pivot, "TRACK_NEGATIVE_Z", "UP_Y"
    for frame, angle in ((1, -swing_deg), (frames, swing_deg)):
        pivot.rotation_euler[2] = math.radians(angle)
        pivot.keyframe_insert("rotation_euler", index=2, frame=frame)
    pivot.rotation_euler[2] = math.radians(swing_deg * 0.6)
    return pivot, cam


# ----------------------------------------------------------------------------------------------
# Results: create, replace, read back
# ----------------------------------------------------------------------------------------------


def remove_result(collection: bpy.types.Collection) -> None:
    """Delete a result collection with its objects and every data block only it used."""
    datas, actions = [], []
    for obj in list(collection.all_objects):
        if obj.data is not None:
            datas.append(obj.data)
        if obj.animation_data and obj.animation_data.action:
            actions.append(obj.animation_data.action)
        bpy.data.objects.remove(obj)
    for action in actions:
        if action.users == 0:
            bpy.data.actions.remove(action)
    for data in datas:
        materials = list(getattr(data, "materials", []))
        if data.users == 0:
            getattr(bpy.data, {"MESH": "meshes", "CAMERA": "cameras"}.get(data.id_type, "meshes")).remove(data)
        for mat in materials:
            if mat is not None and mat.users == 0:
                bpy.data.materials.remove(mat)
    image = collection.get("wt_image")
    for child in list(collection.children_recursive):
        bpy.data.collections.remove(child)
    bpy.data.collections.remove(collection)
    if image is not None and image.get("wt_generated") and image.users == 0:
        bpy.data.images.remove(image)


def rename_result(collection: bpy.types.Collection, old: str, new: str) -> None:
    """Rename a result's collection, objects, their data and materials from prefix `old` to `new`."""
    image = collection.get("wt_image")
    blocks = [collection] + ([image] if image is not None and image.get("wt_generated") else [])
    for obj in collection.all_objects:
        blocks.append(obj)
        if obj.data is not None:
            blocks.append(obj.data)
            blocks.extend(m for m in getattr(obj.data, "materials", []) if m is not None)
    for block in blocks:
        if block.name.startswith(old):
            block.name = new + block.name[len(old) :]


def build_result(
    scene: bpy.types.Scene,
    lpm: LayeredPointMap,
    name: str,
    options: BuildOptions,
    image: bpy.types.Image | None = None,
    properties: dict | None = None,
    replace: bpy.types.Collection | None = None,
) -> bpy.types.Collection:
    """Create the result collection `name` (a new name: see `result_name`), or rebuild `replace` in place
    (same name and result id: Resample, sample flips).

    A replaced result is only removed once the new one is complete; if building fails, what was created
    is removed and the error propagates, so nothing half-built is left.
    """
    voxels = solid_voxels(lpm, options.solid_detail, options.solid_hidden) if options.solid else None
    previous = replace
    if previous is not None:
        name = previous.name
        if "wt_result_id" in previous:
            properties = {**(properties or {}), "wt_result_id": previous["wt_result_id"]}
        rename_result(previous, name, f"{name} (old)")  # frees the names for the new result
    collection = bpy.data.collections.new(name)
    scene.collection.children.link(collection)
    try:
        if image is None:
            image = image_from_array(name, lpm.image)
        collection["wt_image"] = image
        collection["wt_result_id"] = uuid.uuid4().hex
        for key, value in (properties or {}).items():
            collection[key] = value
        camera = matched_camera(f"{name} camera", lpm, image)
        collection.objects.link(camera)
        layers = [k for k in (options.layers or range(lpm.num_layers)) if k < lpm.num_layers and lpm.valid[k].any()]
        for k in layers:
            tint = None if k == 0 else LAYER_COLOURS[k % len(LAYER_COLOURS)]
            if options.output in ("POINTS", "BOTH"):
                collection.objects.link(points_object(f"{name} points L{k}", lpm, k, options.point_size))
            if options.output in ("MESHES", "BOTH"):
                mat = emission_material(f"{name} mesh L{k}", image, tint)
                collection.objects.link(mesh_object(f"{name} mesh L{k}", lpm, k, options.max_rel_jump, mat))
        if voxels is not None:
            solid = solid_object(f"{name} solid", lpm, voxels, image, options.solid_hidden, options.solid_max_faces)
            collection.objects.link(solid)
        add_novel_view_and_render(scene, collection, camera, lpm, name)
    except BaseException:
        remove_result(collection)
        if previous is not None:
            rename_result(previous, f"{name} (old)", name)
        raise
    if previous is not None:
        remove_result(previous)
    return collection


def add_novel_view_and_render(
    scene: bpy.types.Scene, collection: bpy.types.Collection, camera: bpy.types.Object, lpm: LayeredPointMap, name: str
) -> None:
    """The novel-view camera orbiting the median of layer 0, the image's resolution and pixel aspect kept on
    the result, and the scene set to look through the matched `camera`."""
    front = lpm.points[0][lpm.valid[0]]
    centre = opencv_to_world(np.median(front, axis=0, keepdims=True))[0] if len(front) else np.array([0, 2, 0.0])
    for obj in orbit_camera(f"{name} novel view", camera, centre):
        collection.objects.link(obj)
    cam = intrinsics_to_blender_camera(lpm.intrinsics, lpm.width, lpm.height)
    collection["wt_resolution"] = (lpm.width, lpm.height)
    collection["wt_pixel_aspect"] = (cam.pixel_aspect_x, cam.pixel_aspect_y)
    match_render(scene, collection)


def build_clip_result(
    scene: bpy.types.Scene,
    clip: LayeredClip,
    name: str,
    options: BuildOptions,
    background: bpy.types.Image | None = None,
    properties: dict | None = None,
) -> bpy.types.Collection:
    """A clip's result: one matched camera for the clip (`background` behind it, else the first frame),
    a novel-view camera, and for every frame its layers' points and/or meshes (in one child collection
    per layer), each shown on its own frame only (its visibility keyed), so the result plays with the
    timeline from frame 1 and renders on every frame. Every vertex also carries `wt_frame` (0-based).
    Nothing is left if building fails."""
    T = len(clip.image)
    collection = bpy.data.collections.new(name)
    scene.collection.children.link(collection)
    try:
        first = clip.frame(0)
        image = background if background is not None else image_from_array(name, first.image)
        collection["wt_image"] = image
        collection["wt_result_id"] = uuid.uuid4().hex
        collection["wt_frames"] = T
        for key, value in (properties or {}).items():
            collection[key] = value
        camera = matched_camera(f"{name} camera", first, image)
        if background is not None and background.source in ("SEQUENCE", "MOVIE"):
            user = camera.data.background_images[0].image_user
            user.frame_start, user.frame_duration, user.use_auto_refresh = 1, T, True
        collection.objects.link(camera)
        layers: dict[int, bpy.types.Collection] = {}  # one child collection per layer (hide a layer there)
        materials: dict[int, bpy.types.Material] = {}
        for t in range(T):
            lpm = clip.frame(t)
            for k in options.layers or range(lpm.num_layers):
                if k < lpm.num_layers and lpm.valid[k].any():
                    for obj in frame_layer_objects(name, lpm, k, t, options, materials):
                        show_on_frame_only(obj, t + 1, T)
                        if k not in layers:
                            layers[k] = bpy.data.collections.new(f"{name} L{k}")
                            layers[k]["wt_layer"] = k
                            collection.children.link(layers[k])
                        layers[k].objects.link(obj)
        add_novel_view_and_render(scene, collection, camera, first, name)
        scene.frame_start, scene.frame_end = 1, T
    except BaseException:
        remove_result(collection)
        raise
    return collection


def frame_layer_objects(
    name: str, lpm: LayeredPointMap, layer: int, frame: int, options: BuildOptions, materials: dict
) -> list[bpy.types.Object]:
    """One frame's layer as points and/or a mesh named after the result `name`, with `wt_frame`; meshes
    share one material per layer (`materials`, filled as needed: colour from wt_color)."""
    made = []
    if options.output in ("POINTS", "BOTH"):
        made.append(points_object(f"{name} points L{layer} F{frame + 1}", lpm, layer, options.point_size))
    if options.output in ("MESHES", "BOTH"):
        if layer not in materials:
            tint = None if layer == 0 else LAYER_COLOURS[layer % len(LAYER_COLOURS)]
            materials[layer] = emission_material(f"{name} mesh L{layer}", None, tint)
        mesh = mesh_object(f"{name} mesh L{layer} F{frame + 1}", lpm, layer, options.max_rel_jump, materials[layer])
        made.append(mesh)
    for obj in made:
        values = np.full(len(obj.data.vertices), frame, np.int32)
        obj.data.attributes.new("wt_frame", "INT", "POINT").data.foreach_set("value", values)
    return made


def show_on_frame_only(obj: bpy.types.Object, frame: int, last: int) -> None:
    """Key an object's viewport and render visibility so that it shows on `frame` only (of frames 1..last)."""
    keys = [(frame, False)] + [(f, True) for f in (frame - 1, frame + 1) if 1 <= f <= last]
    for f, hidden in keys:
        obj.hide_viewport = obj.hide_render = hidden
        obj.keyframe_insert("hide_viewport", frame=f)
        obj.keyframe_insert("hide_render", frame=f)
    obj.hide_viewport = obj.hide_render = frame != 1  # as on frame 1, until the timeline evaluates it


def matched_camera_of(collection: bpy.types.Collection) -> bpy.types.Object:
    """The camera of a result that reproduces its image (the novel-view camera has a parent)."""
    camera = next((o for o in collection.objects if o.type == "CAMERA" and o.parent is None), None)
    if camera is None:
        raise ValueError(f"{collection.name} has no matched camera; it was not made by World Tracing")
    return camera


def match_render(scene: bpy.types.Scene, collection: bpy.types.Collection) -> None:
    """Look through a result's matched camera: scene camera, render resolution and pixel aspect its image's
    (kept on the result, so selecting an earlier result restores its own)."""
    scene.camera = matched_camera_of(collection)
    scene.render.resolution_x, scene.render.resolution_y = (int(v) for v in collection["wt_resolution"])
    scene.render.resolution_percentage = 100
    scene.render.pixel_aspect_x, scene.render.pixel_aspect_y = (float(v) for v in collection["wt_pixel_aspect"])


def result_layers(collection: bpy.types.Collection) -> dict[int, list[bpy.types.Object]]:
    """Geometry objects of a result by layer (read from their wt_layer attribute)."""
    layers: dict[int, list] = {}
    for obj in collection.objects:
        if (
            obj.type == "MESH"
            and "wt_layer" in obj.data.attributes
            and len(obj.data.vertices)
            and not obj.get("wt_solid")
        ):
            layers.setdefault(int(obj.data.attributes["wt_layer"].data[0].value), []).append(obj)
    return layers


def layered_from_result(collection: bpy.types.Collection) -> LayeredPointMap:
    """Read a (possibly edited) result back as a LayeredPointMap: vertex positions into the matched
    camera's OpenCV frame, placed at their wt_pixel; deleted points become invalid."""
    if "wt_frames" in collection:
        raise ValueError(
            f"{collection.name} is a clip: it is not exported as one map (`python -m core trace FRAMES --mode "
            "dynamic` writes a clip's .npz)"
        )
    camera = matched_camera_of(collection)
    image = collection.get("wt_image")
    if image is None or "wt_pixel_aspect" not in collection:
        raise ValueError(f"{collection.name} has no image or camera data; it was not made by World Tracing")
    W, H = image.size
    rgba = np.empty(W * H * 4, np.float32)
    image.pixels.foreach_get(rgba)
    rgb = (rgba.reshape(H, W, 4)[::-1, :, :3] * 255.0 + 0.5).astype(np.uint8)
    d = camera.data
    aspect_x, aspect_y = (float(v) for v in collection["wt_pixel_aspect"])
    intrinsics = blender_camera_to_intrinsics(
        d.lens, d.sensor_width, d.sensor_height, d.sensor_fit, d.shift_x, d.shift_y, W, H, aspect_x, aspect_y
    )
    world_to_camera = np.array(camera.matrix_world.inverted(), dtype=np.float64)
    layers = result_layers(collection)
    L = max(layers) + 1 if layers else 1
    points = np.zeros((L, H, W, 3), np.float32)
    valid = np.zeros((L, H, W), bool)
    for k, objects in layers.items():
        obj = next((o for o in objects if o.modifiers.get("Points")), objects[0])  # points carry every valid pixel
        n = len(obj.data.vertices)
        co = np.empty(n * 3, np.float32)
        obj.data.attributes["position"].data.foreach_get("vector", co)
        pix = np.empty(n, np.int32)
        obj.data.attributes["wt_pixel"].data.foreach_get("value", pix)
        m = world_to_camera @ np.array(obj.matrix_world, dtype=np.float64)
        cam = co.reshape(-1, 3) @ m[:3, :3].T + m[:3, 3]  # Blender camera axes
        points[k].reshape(-1, 3)[pix] = cam * np.array([1.0, -1.0, -1.0])
        valid[k].reshape(-1)[pix] = True
    valid = np.cumprod(valid, axis=0).astype(bool)  # keep layers front to back
    return LayeredPointMap(points * valid[..., None], valid, intrinsics, rgb)

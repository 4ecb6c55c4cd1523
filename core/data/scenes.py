"""Randomised Blender scenes for ground truth: objects on a transparent background, or rooms and streets.

Runs inside a Blender process (the bpy module); bpy is imported inside the functions only, so
importing this module never needs Blender. Every random choice comes from the numpy Generator
passed in, so a scene is a pure function of its seed.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ..geometry.camera import SENSOR_MM, fov_to_focal
from .layouts import Camera, scene_layout
from .motion import camera_path, draw_motions, moved
from .recipe import TRAIN_FAMILIES, Mesh, assemble, draw_parts
from .tracing import SkipSample, TracedSample, evaluated_mesh, render_and_trace

ASSET_SUFFIXES = (".obj", ".ply", ".glb", ".gltf", ".blend")
REST_ATTRIBUTE = "rest"  # per-vertex position as first placed: the texture coordinates


# ----------------------------------------------------------------------------------------------
# Scene set-up
# ----------------------------------------------------------------------------------------------

def reset_scene(resolution: int, samples: int, threads: int, transparent: bool, denoise: bool = False) -> None:
    """Empty factory scene with Cycles on the CPU (GPU when Blender finds one), square resolution."""
    import bpy

    bpy.ops.wm.read_factory_settings(use_empty=True)
    scene = bpy.context.scene
    scene.render.engine = "CYCLES"
    scene.cycles.device = "GPU" if _enable_gpu() else "CPU"
    scene.cycles.samples = samples
    scene.cycles.use_denoising = denoise
    scene.cycles.use_adaptive_sampling = True
    scene.cycles.max_bounces = 4
    scene.cycles.seed = 0
    scene.render.threads_mode = "FIXED"
    scene.render.threads = threads
    scene.render.resolution_x = scene.render.resolution_y = resolution
    scene.render.resolution_percentage = 100
    scene.render.film_transparent = transparent
    scene.render.image_settings.file_format = "PNG"
    scene.render.image_settings.color_mode = "RGBA"
    scene.render.image_settings.color_depth = "8"
    scene.view_settings.view_transform = "Standard"
    scene.world = bpy.data.worlds.new("world")


def _enable_gpu() -> bool:
    """Switch Cycles to the first GPU backend that lists a device; False on CPU-only machines."""
    import bpy

    prefs = bpy.context.preferences.addons["cycles"].preferences
    for backend in ("OPTIX", "CUDA", "HIP", "METAL", "ONEAPI"):
        try:
            prefs.compute_device_type = backend
        except TypeError:  # backend not compiled into this build
            continue
        prefs.get_devices()
        gpus = [d for d in prefs.devices if d.type == backend]
        if gpus:
            for d in gpus:
                d.use = True
            return True
    prefs.compute_device_type = "NONE"
    return False


# ----------------------------------------------------------------------------------------------
# Materials and lights
# ----------------------------------------------------------------------------------------------

def _random_colour(rng: np.random.Generator) -> tuple[float, float, float, float]:
    h, s, v = rng.random(), rng.uniform(0.1, 0.9), rng.uniform(0.15, 0.95)
    i = int(h * 6) % 6
    f = h * 6 - int(h * 6)
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    r, g, b = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i]
    return (r, g, b, 1.0)


def new_material(name: str):
    """A fresh node material; returns it and its Principled BSDF."""
    import bpy

    mat = bpy.data.materials.new(name)
    if mat.node_tree is None:  # Blender < 5.0 creates materials without nodes
        mat.use_nodes = True
    return mat, mat.node_tree.nodes["Principled BSDF"]


def texture_base_color(mat, kind: str, scale: float, colours: tuple) -> None:
    """Drive the material's base colour by procedural texture `kind` (a node type) at `scale` in rest
    coordinates (REST_ATTRIBUTE: the vertices as placed, so a texture stays on a surface that moves),
    mapped through a two-colour ramp."""
    nodes, links = mat.node_tree.nodes, mat.node_tree.links
    tex = nodes.new(kind)
    tex.inputs["Scale"].default_value = scale
    coord = nodes.new("ShaderNodeAttribute")
    coord.attribute_name = REST_ATTRIBUTE
    links.new(coord.outputs["Vector"], tex.inputs["Vector"])
    ramp = nodes.new("ShaderNodeValToRGB")
    ramp.color_ramp.elements[0].color, ramp.color_ramp.elements[1].color = colours
    links.new(tex.outputs["Fac"] if "Fac" in tex.outputs else tex.outputs[0], ramp.inputs["Fac"])
    links.new(ramp.outputs["Color"], nodes["Principled BSDF"].inputs["Base Color"])


def random_material(rng: np.random.Generator, name: str):
    """Principled BSDF with a random colour, roughness and metalness; half the time a procedural texture."""
    mat, bsdf = new_material(name)
    bsdf.inputs["Roughness"].default_value = rng.uniform(0.2, 0.9)
    bsdf.inputs["Metallic"].default_value = 1.0 if rng.random() < 0.15 else 0.0
    if rng.random() < 0.5:
        kind = rng.choice(["ShaderNodeTexNoise", "ShaderNodeTexVoronoi", "ShaderNodeTexChecker",
                           "ShaderNodeTexWave", "ShaderNodeTexMagic", "ShaderNodeTexBrick"])
        texture_base_color(mat, str(kind), rng.uniform(2.0, 12.0), (_random_colour(rng), _random_colour(rng)))
    else:
        bsdf.inputs["Base Color"].default_value = _random_colour(rng)
    return mat


def _look_rotation(direction: np.ndarray, roll: float = 0.0):
    """Blender rotation (quaternion) pointing an object's -Z along `direction` with +Y up."""
    from mathutils import Vector

    quat = Vector(direction.tolist()).to_track_quat("-Z", "Y")
    if roll:
        from mathutils import Quaternion
        quat = quat @ Quaternion((0.0, 0.0, 1.0), roll)
    return quat


def add_lights(rng: np.random.Generator, centre: np.ndarray, spread: float) -> None:
    """Ambient world light, a sun with random direction, and sometimes a point light near `centre`."""
    import bpy

    scene = bpy.context.scene
    if scene.world.node_tree is None:
        scene.world.use_nodes = True
    bg = scene.world.node_tree.nodes["Background"]
    grey = rng.uniform(0.6, 1.0)
    tint = rng.uniform(0.85, 1.0, size=3)
    bg.inputs["Color"].default_value = (*(grey * tint), 1.0)
    bg.inputs["Strength"].default_value = rng.uniform(0.2, 0.8)

    sun = bpy.data.objects.new("sun", bpy.data.lights.new("sun", "SUN"))
    sun.data.energy = rng.uniform(1.5, 5.0)
    sun.data.angle = rng.uniform(0.01, 0.3)
    elevation, azimuth = rng.uniform(0.3, 1.4), rng.uniform(0, 2 * math.pi)
    d = -np.array([math.cos(elevation) * math.cos(azimuth), math.cos(elevation) * math.sin(azimuth), math.sin(elevation)])
    sun.rotation_mode = "QUATERNION"
    sun.rotation_quaternion = _look_rotation(d)
    scene.collection.objects.link(sun)
    if rng.random() < 0.5:
        point = bpy.data.objects.new("point", bpy.data.lights.new("point", "POINT"))
        point.data.energy = rng.uniform(50, 400) * spread ** 2
        point.location = (centre + rng.uniform(-1, 1, 3) * spread).tolist()
        scene.collection.objects.link(point)


# ----------------------------------------------------------------------------------------------
# Objects and modifiers
# ----------------------------------------------------------------------------------------------

def add_mesh(name: str, vertices: np.ndarray, faces: np.ndarray, material, smooth: bool = True):
    """A mesh object from world-space vertices (V, 3) and triangles (F, 3), linked to the scene; its
    vertices as placed are kept as REST_ATTRIBUTE, where textures sit."""
    import bpy

    mesh = bpy.data.meshes.new(name)
    mesh.from_pydata(vertices.tolist(), [], faces.tolist())
    mesh.validate()
    rest = mesh.attributes.new(REST_ATTRIBUTE, "FLOAT_VECTOR", "POINT")
    rest.data.foreach_set("vector", mesh_vertices(mesh).ravel())
    mesh.polygons.foreach_set("use_smooth", [smooth] * len(mesh.polygons))
    mesh.materials.append(material)
    obj = bpy.data.objects.new(name, mesh)
    bpy.context.scene.collection.objects.link(obj)
    return obj


def asset_mesh(path: Path) -> Mesh:
    """World-space triangles of an asset file's evaluated meshes, as one mesh; the imported objects
    are removed again. Raises on files that cannot be read or hold no mesh."""
    import bpy

    objects = import_asset(path)
    depsgraph = bpy.context.evaluated_depsgraph_get()
    verts, faces, offset = [], [], 0
    for obj in objects:
        v, f = evaluated_mesh(obj, depsgraph)
        verts.append(v)
        faces.append(f + offset)
        offset += len(v)
    for obj in objects:
        bpy.data.objects.remove(obj)
    return np.concatenate(verts), np.concatenate(faces)


def import_asset(path: Path):
    """Mesh objects of an .obj/.ply/.glb/.gltf/.blend file, linked to the scene; raises on failure."""
    import bpy

    before = set(bpy.data.objects)
    suffix = path.suffix.lower()
    if suffix == ".obj":
        bpy.ops.wm.obj_import(filepath=str(path))
    elif suffix == ".ply":
        bpy.ops.wm.ply_import(filepath=str(path))
    elif suffix in (".glb", ".gltf"):
        bpy.ops.import_scene.gltf(filepath=str(path))
    elif suffix == ".blend":
        with bpy.data.libraries.load(str(path), link=False) as (src, dst):
            dst.objects = list(src.objects)
        for obj in dst.objects:
            if obj is not None:
                bpy.context.scene.collection.objects.link(obj)
    else:
        raise ValueError(f"unsupported asset format {suffix!r}")
    new = [o for o in set(bpy.data.objects) - before]
    meshes = [o for o in new if o.type == "MESH"]
    for o in new:
        if o.type != "MESH":
            bpy.data.objects.remove(o)
    if not meshes:
        raise ValueError("file holds no mesh object")
    return sorted(meshes, key=lambda o: o.name)


def find_assets(folder: str | None) -> list[Path]:
    """Asset files (by suffix) under `folder`, sorted so every worker sees the same list."""
    if not folder:
        return []
    return sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in ASSET_SUFFIXES)


# ----------------------------------------------------------------------------------------------
# Scene recipes
# ----------------------------------------------------------------------------------------------

def build_object_scene(rng: np.random.Generator, assets: list[Path], log: list[str],
                       families: tuple[str, ...] = TRAIN_FAMILIES) -> tuple[dict, list]:
    """The shared recipe's object scene (core/data/recipe.py): one to three parts of the given shape
    families (or asset files), placed and scaled into the object sphere, each with a random material;
    then random lights. Appends skip reasons (unreadable assets) to `log`. Returns metadata and the
    parts' mesh objects."""
    parts = draw_parts(rng, families, assets=len(assets))
    meshes: list[Mesh] = []
    for part in parts:
        if part.mesh is not None:
            meshes.append(part.mesh)
            continue
        path = assets[part.asset]
        try:
            meshes.append(asset_mesh(path))
            part.label = f"asset:{path.name}"
        except Exception as e:  # unreadable or unsupported files are skipped, never fatal
            log.append(f"skipped asset {path}: {e}")
            meshes.append((np.zeros((0, 3)), np.zeros((0, 3), np.int64)))
    placed = assemble(parts, meshes)
    if not placed:
        raise SkipSample("every part of the object was degenerate")
    objects = [add_mesh(f"part{i}", v, f, random_material(rng, f"mat{i}")) for i, (v, f) in enumerate(placed)]
    add_lights(rng, np.zeros(3), 2.0)
    return {"mode": "object", "parts": [p.label for p in parts]}, objects


def mesh_vertices(mesh) -> np.ndarray:
    """(V, 3) float64 vertex positions of a Blender mesh."""
    co = np.empty(3 * len(mesh.vertices), np.float32)
    mesh.vertices.foreach_get("co", co)
    return co.reshape(-1, 3).astype(np.float64)


def render_clip(rng: np.random.Generator, objects: list, camera: Camera, frames: int, layers: int,
                log: list[str], motion: str | None = None) -> tuple[list[TracedSample], str]:
    """The object scene of `objects` (`build_object_scene`, seen by the scene's camera placed at
    `camera`) animated over `frames` frames as the torch stream animates it (`core/data/motion.py`:
    the parts move, the camera orbits and dollies unless the clip is still); every frame rendered
    (Cycles' noise seed changes per frame, as a sensor's noise does) and traced. `motion`: the kind
    (default: drawn). Returns the frames and the kind; raises SkipSample when a frame shows nothing."""
    import bpy

    rest = [(mesh_vertices(obj.data), np.zeros((0, 3), np.int64)) for obj in objects]
    motions = draw_motions(rng, rest, motion)
    kind = motions[0].kind
    path = camera_path(rng, camera, frames, still=kind == "static")
    scene, traced = bpy.context.scene, []
    for t, (position, direction, _) in enumerate(path):
        for obj, mesh, part_motion in zip(objects, rest, motions, strict=True):
            obj.data.vertices.foreach_set("co", moved(mesh, part_motion, t)[0].astype(np.float32).ravel())
            obj.data.update()
        place_camera(scene.camera, position, direction)
        scene.cycles.seed = t
        traced.append(render_and_trace(layers, log))
    return traced, kind


def surface_material(rng: np.random.Generator, name: str, surface: str):
    """A material for one of the layouts' surface groups: walls, floors, ground and buildings are
    mostly textured (bricks, tiles, planks, noise) at a metric scale; objects as `random_material`."""
    if surface == "object" or rng.random() < 0.2:
        return random_material(rng, name)
    mat, bsdf = new_material(name)
    bsdf.inputs["Roughness"].default_value = rng.uniform(0.4, 0.95)
    pattern = str(rng.choice(["bricks", "tiles", "planks", "noise"]))
    kind, scale = {"bricks": ("ShaderNodeTexBrick", (0.5, 2.0)), "tiles": ("ShaderNodeTexChecker", (1.0, 4.0)),
                   "planks": ("ShaderNodeTexWave", (0.5, 2.0)), "noise": ("ShaderNodeTexNoise", (0.5, 4.0))}[pattern]
    per_metre = rng.uniform(*scale)  # the layouts' meshes are in metres
    base = np.array(_random_colour(rng))
    other = np.r_[np.clip(base[:3] * rng.uniform(0.5, 1.5), 0, 1), 1.0]
    texture_base_color(mat, kind, per_metre, (tuple(base), tuple(other)))
    return mat


def build_layout_scene(rng: np.random.Generator) -> tuple[dict, tuple[np.ndarray, np.ndarray, float]]:
    """The shared recipe's scene (core/data/layouts.py: a room or a street), one material per surface
    group and per assembly, and lights: indoors ambient + sun + a ceiling lamp, outdoors a sky and a
    strong sun. Returns metadata and the layout's camera (position, direction, FOV)."""
    import bpy

    layout = scene_layout(rng)
    materials: dict[tuple[str, int], object] = {}
    for i, piece in enumerate(layout.pieces):
        key = (piece.surface, piece.group if piece.surface == "object" else 0)
        if key not in materials:
            materials[key] = surface_material(rng, f"{key[0]}{key[1]}", key[0])
        add_mesh(f"{piece.name}.{i}", *piece.mesh, materials[key], smooth=piece.smooth)
    x, y, z = layout.camera[0]
    add_lights(rng, np.array([x, y, z + 1.0]), 1.0)
    if layout.lamp is not None:
        lamp = bpy.data.objects.new("lamp", bpy.data.lights.new("lamp", "POINT"))
        W, D, _ = layout.meta["room"]
        lamp.data.energy = rng.uniform(40, 150) * W * D / 16
        lamp.data.shadow_soft_size = rng.uniform(0.1, 0.5)
        lamp.location = layout.lamp.tolist()
        bpy.context.scene.collection.objects.link(lamp)
    else:  # daylight: a bright sky behind everything, a stronger sun
        world = bpy.context.scene.world.node_tree.nodes["Background"]
        blue = rng.uniform(0.0, 1.0)
        world.inputs["Color"].default_value = (0.55 + 0.35 * (1 - blue), 0.65 + 0.25 * (1 - blue), 0.9, 1.0)
        world.inputs["Strength"].default_value = rng.uniform(0.4, 1.0)
        bpy.data.objects["sun"].data.energy = rng.uniform(2.0, 4.5)
    return {"mode": "scene", "kind": layout.kind, **layout.meta}, layout.camera


def add_camera(position: np.ndarray, direction: np.ndarray, fov: float, roll: float = 0.0):
    """Scene camera at `position` looking along `direction` with horizontal field of view `fov`."""
    import bpy

    cam = bpy.data.objects.new("camera", bpy.data.cameras.new("camera"))
    cam.data.sensor_fit = "HORIZONTAL"
    cam.data.sensor_width = SENSOR_MM
    cam.data.lens = fov_to_focal(fov, SENSOR_MM)
    cam.data.clip_start = 0.01
    bpy.context.scene.collection.objects.link(cam)
    bpy.context.scene.camera = cam
    place_camera(cam, position, direction, roll)
    return cam


def place_camera(cam, position: np.ndarray, direction: np.ndarray, roll: float = 0.0) -> None:
    """Put camera object `cam` at `position` looking along `direction`."""
    import bpy

    cam.location = position.tolist()
    cam.rotation_mode = "QUATERNION"
    cam.rotation_quaternion = _look_rotation(direction / np.linalg.norm(direction), roll)
    bpy.context.view_layer.update()

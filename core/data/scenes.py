"""Randomised Blender scenes for ground truth: objects on a transparent background, or rooms.

Runs inside a Blender process (the bpy module); bpy is imported inside the functions only, so
importing this module never needs Blender. Every random choice comes from the numpy Generator
passed in, so a scene is a pure function of its seed.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ..geometry.camera import SENSOR_MM, fov_to_focal
from .recipe import FAMILIES, TRAIN_FAMILIES, Mesh, assemble, draw_parts
from .tracing import SkipSample, evaluated_mesh

ASSET_SUFFIXES = (".obj", ".ply", ".glb", ".gltf", ".blend")


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


def random_material(rng: np.random.Generator, name: str):
    """Principled BSDF with a random colour, roughness and metalness; half the time a procedural texture."""
    import bpy

    mat = bpy.data.materials.new(name)
    if mat.node_tree is None:  # Blender < 5.0 creates materials without nodes
        mat.use_nodes = True
    nodes, links = mat.node_tree.nodes, mat.node_tree.links
    bsdf = nodes["Principled BSDF"]
    bsdf.inputs["Roughness"].default_value = rng.uniform(0.2, 0.9)
    bsdf.inputs["Metallic"].default_value = 1.0 if rng.random() < 0.15 else 0.0
    if rng.random() < 0.5:
        kind = rng.choice(["ShaderNodeTexNoise", "ShaderNodeTexVoronoi", "ShaderNodeTexChecker",
                           "ShaderNodeTexWave", "ShaderNodeTexMagic", "ShaderNodeTexBrick"])
        tex = nodes.new(kind)
        tex.inputs["Scale"].default_value = rng.uniform(2.0, 12.0)
        coord = nodes.new("ShaderNodeTexCoord")
        links.new(coord.outputs["Object"], tex.inputs["Vector"])
        ramp = nodes.new("ShaderNodeValToRGB")
        ramp.color_ramp.elements[0].color = _random_colour(rng)
        ramp.color_ramp.elements[1].color = _random_colour(rng)
        links.new(tex.outputs["Fac"] if "Fac" in tex.outputs else tex.outputs[0], ramp.inputs["Fac"])
        links.new(ramp.outputs["Color"], bsdf.inputs["Base Color"])
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
    """A mesh object from world-space vertices (V, 3) and triangles (F, 3), linked to the scene."""
    import bpy

    mesh = bpy.data.meshes.new(name)
    mesh.from_pydata(vertices.tolist(), [], faces.tolist())
    mesh.validate()
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
                       families: tuple[str, ...] = TRAIN_FAMILIES) -> dict:
    """The shared recipe's object scene (core/data/recipe.py): one to three parts of the given shape
    families (or asset files), placed and scaled into the object sphere, each with a random material;
    then random lights. Appends skip reasons (unreadable assets) to `log`. Returns metadata."""
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
    for i, (v, f) in enumerate(placed):
        add_mesh(f"part{i}", v, f, random_material(rng, f"mat{i}"))
    add_lights(rng, np.zeros(3), 2.0)
    return {"mode": "object", "parts": [p.label for p in parts]}


def _add_box(name: str, centre, size, material, rotation_z: float = 0.0):
    import bpy

    bpy.ops.mesh.primitive_cube_add(size=1.0, location=tuple(centre))
    obj = bpy.context.active_object
    obj.name = name
    obj.scale = tuple(size)
    obj.rotation_euler[2] = rotation_z
    obj.data.materials.append(material)
    return obj


def build_room_scene(rng: np.random.Generator, log: list[str]) -> dict:
    """A room (floor, ceiling, thick walls with door/window openings) with furniture-like objects.

    The room spans x ∈ [0, W], y ∈ [0, D], z ∈ [0, height]. Returns metadata with the room size
    and the furniture footprints (for the camera placement).
    """
    import bpy

    W, D, Hr = rng.uniform(3.0, 7.0), rng.uniform(3.0, 7.0), rng.uniform(2.4, 3.4)
    t = rng.uniform(0.08, 0.2)
    wall_mat, floor_mat = random_material(rng, "wall"), random_material(rng, "floor")
    _add_box("floor", (W / 2, D / 2, -t / 2), (W + 2 * t, D + 2 * t, t), floor_mat)
    if rng.random() < 0.8:
        _add_box("ceiling", (W / 2, D / 2, Hr + t / 2), (W + 2 * t, D + 2 * t, t), wall_mat)
    walls = [
        _add_box("wall_s", (W / 2, -t / 2, Hr / 2), (W + 2 * t, t, Hr), wall_mat),
        _add_box("wall_n", (W / 2, D + t / 2, Hr / 2), (W + 2 * t, t, Hr), wall_mat),
        _add_box("wall_w", (-t / 2, D / 2, Hr / 2), (t, D, Hr), wall_mat),
        _add_box("wall_e", (W + t / 2, D / 2, Hr / 2), (t, D, Hr), wall_mat),
    ]
    openings = 0
    for wall in walls:
        if rng.random() < 0.5:
            along_x = wall.name in ("wall_s", "wall_n")
            length = W if along_x else D
            door = rng.random() < 0.4
            w, h = (rng.uniform(0.8, 1.2), rng.uniform(1.9, 2.2)) if door else (rng.uniform(0.6, 2.0), rng.uniform(0.6, 1.4))
            z = h / 2 if door else rng.uniform(0.9, Hr - 0.3 - h / 2)
            c = rng.uniform(w / 2 + 0.2, max(length - w / 2 - 0.2, w / 2 + 0.21))
            centre = (c, wall.location.y, z) if along_x else (wall.location.x, c, z)
            size = (w, 4 * t, h) if along_x else (4 * t, w, h)
            cutter = _add_box("opening", centre, size, wall_mat)
            cutter.hide_render, cutter.display_type = True, "WIRE"
            cutter["wt_helper"] = True
            mod = wall.modifiers.new("opening", "BOOLEAN")
            mod.operation, mod.solver, mod.object = "DIFFERENCE", "EXACT", cutter
            openings += 1
    footprints = []
    for i in range(int(rng.integers(3, 9))):
        fw, fd = rng.uniform(0.3, 1.6), rng.uniform(0.3, 1.2)
        x, y = rng.uniform(fw / 2 + 0.05, W - fw / 2 - 0.05), rng.uniform(fd / 2 + 0.05, D - fd / 2 - 0.05)
        rot = rng.uniform(0, 2 * math.pi)
        mat = random_material(rng, f"furniture{i}")
        kind = rng.choice(["table", "cabinet", "shelf", "round", "blob"])
        footprints.append((x, y, 0.5 * math.hypot(fw, fd)))
        if kind == "table":
            h = rng.uniform(0.4, 1.0)
            _add_box(f"top{i}", (x, y, h - 0.02), (fw, fd, 0.04), mat, rot)
            c, s = math.cos(rot), math.sin(rot)
            for sx in (-1, 1):
                for sy in (-1, 1):
                    dx, dy = sx * (fw / 2 - 0.05), sy * (fd / 2 - 0.05)
                    _add_box(f"leg{i}", (x + c * dx - s * dy, y + s * dx + c * dy, (h - 0.04) / 2), (0.05, 0.05, h - 0.04), mat, rot)
        elif kind == "cabinet":
            h = rng.uniform(0.5, 2.0)
            _add_box(f"cabinet{i}", (x, y, h / 2), (fw, fd, h), mat, rot)
        elif kind == "shelf":
            h = rng.uniform(1.0, 2.0)
            for k in range(int(rng.integers(2, 5))):
                _add_box(f"board{i}", (x, y, k * h / 4 + 0.02), (fw, fd * 0.5, 0.03), mat, rot)
            _add_box(f"side{i}", (x, y, h / 2), (fw, 0.03, h), mat, rot)
        else:
            v, f = FAMILIES[str(rng.choice(TRAIN_FAMILIES))](rng)  # clutter: a recipe shape on the floor
            r = rng.uniform(0.2, 0.5)
            v = (v - 0.5 * (v.min(0) + v.max(0))) * (2 * r / np.ptp(v, axis=0).max())
            add_mesh(f"clutter{i}", v + np.array([x, y, -v[:, 2].min()]), f, mat)
            footprints[-1] = (x, y, r)
    add_lights(rng, np.array([W / 2, D / 2, Hr * 0.8]), 1.0)
    light = bpy.data.objects.new("room_light", bpy.data.lights.new("room_light", "POINT"))
    light.data.energy = rng.uniform(40, 150) * W * D / 16
    light.data.shadow_soft_size = rng.uniform(0.1, 0.5)
    light.location = (rng.uniform(0.5, W - 0.5), rng.uniform(0.5, D - 0.5), Hr - 0.3)
    bpy.context.scene.collection.objects.link(light)
    return {"mode": "scene", "room": [W, D, Hr], "openings": openings, "footprints": footprints}


def place_room_camera(rng: np.random.Generator, meta: dict) -> tuple[np.ndarray, np.ndarray, float]:
    """Camera inside the room, clear of furniture footprints, looking roughly horizontally; FOV 45–80°."""
    W, D, Hr = meta["room"]
    for _ in range(50):
        x, y = rng.uniform(0.5, W - 0.5), rng.uniform(0.5, D - 0.5)
        if all(math.hypot(x - fx, y - fy) > r + 0.3 for fx, fy, r in meta["footprints"]):
            break
    z = rng.uniform(1.0, min(1.9, Hr - 0.3))
    yaw = math.atan2(D / 2 - y, W / 2 - x) + rng.uniform(-1.0, 1.0)  # roughly toward the room's middle
    pitch = rng.uniform(-0.45, 0.1)
    direction = np.array([math.cos(pitch) * math.cos(yaw), math.cos(pitch) * math.sin(yaw), math.sin(pitch)])
    return np.array([x, y, z]), direction, math.radians(rng.uniform(45.0, 80.0))


def add_camera(position: np.ndarray, direction: np.ndarray, fov: float, roll: float = 0.0):
    """Scene camera at `position` looking along `direction` with horizontal field of view `fov`."""
    import bpy

    cam = bpy.data.objects.new("camera", bpy.data.cameras.new("camera"))
    cam.data.sensor_fit = "HORIZONTAL"
    cam.data.sensor_width = SENSOR_MM
    cam.data.lens = fov_to_focal(fov, SENSOR_MM)
    cam.data.clip_start = 0.01
    cam.location = position.tolist()
    cam.rotation_mode = "QUATERNION"
    cam.rotation_quaternion = _look_rotation(direction / np.linalg.norm(direction), roll)
    bpy.context.scene.collection.objects.link(cam)
    bpy.context.scene.camera = cam
    bpy.context.view_layer.update()
    return cam

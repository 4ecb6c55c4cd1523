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
from .tracing import SkipSample, evaluated_mesh

OBJECT_RADIUS = 0.5  # object mode: the group of objects is scaled into a sphere of this radius
ASSET_SUFFIXES = (".obj", ".ply", ".glb", ".gltf", ".blend")
PRIMITIVES = ("cube", "uv_sphere", "ico_sphere", "cylinder", "tube", "cone", "torus", "monkey", "plane")


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

def add_primitive(kind: str, rng: np.random.Generator):
    """A Blender primitive of about unit size, smooth-shaded where it is curved."""
    import bpy

    ops = bpy.ops.mesh
    if kind == "cube":
        ops.primitive_cube_add(size=1.0)
    elif kind == "uv_sphere":
        ops.primitive_uv_sphere_add(radius=0.5, segments=48, ring_count=24)
    elif kind == "ico_sphere":
        ops.primitive_ico_sphere_add(radius=0.5, subdivisions=int(rng.integers(1, 4)))
    elif kind in ("cylinder", "tube"):
        ops.primitive_cylinder_add(radius=0.4, depth=1.0, vertices=40, end_fill_type="NGON" if kind == "cylinder" else "NOTHING")
    elif kind == "cone":
        ops.primitive_cone_add(radius1=0.5, radius2=rng.uniform(0.0, 0.3), depth=1.0, vertices=40)
    elif kind == "torus":
        ops.primitive_torus_add(major_radius=0.4, minor_radius=rng.uniform(0.08, 0.2), major_segments=48, minor_segments=16)
    elif kind == "monkey":
        ops.primitive_monkey_add(size=0.9)
    elif kind == "plane":
        ops.primitive_plane_add(size=1.0)
    else:
        raise ValueError(f"unknown primitive {kind!r}")
    obj = bpy.context.active_object
    if kind not in ("cube", "plane"):
        obj.data.polygons.foreach_set("use_smooth", [True] * len(obj.data.polygons))
    return obj


def _hidden_cutter(rng: np.random.Generator, parent):
    """A box, sphere or cylinder used only as a boolean operand: never rendered, never traced."""
    import bpy

    kind = rng.choice(["cube", "uv_sphere", "cylinder"])
    cutter = add_primitive(str(kind), rng)
    cutter.name = "cutter"
    cutter.scale = rng.uniform(0.3, 0.7, 3).tolist()
    side = rng.normal(size=3)
    cutter.location = (side / np.linalg.norm(side) * rng.uniform(0.35, 0.6)).tolist()  # bite off a part, not all
    cutter.rotation_euler = rng.uniform(0, math.pi, 3).tolist()
    cutter.parent = parent
    cutter.hide_render = True
    cutter.display_type = "WIRE"
    cutter["wt_helper"] = True
    bpy.context.view_layer.update()
    return cutter


def add_random_modifiers(obj, kind: str, rng: np.random.Generator) -> list[str]:
    """Stack random modifiers (subdivide+displace, twist/bend/taper, solidify shells, boolean cuts,
    bevel, array) on `obj`; returns the names applied, for the sample's metadata."""
    import bpy

    applied = []
    if kind in ("tube", "plane") or rng.random() < 0.25:
        mod = obj.modifiers.new("solidify", "SOLIDIFY")
        mod.thickness = rng.uniform(0.03, 0.12)
        applied.append("solidify")
    if kind == "cube" and rng.random() < 0.4:
        mod = obj.modifiers.new("bevel", "BEVEL")
        mod.width, mod.segments = rng.uniform(0.02, 0.12), int(rng.integers(1, 4))
        applied.append("bevel")
    if rng.random() < 0.35:
        sub = obj.modifiers.new("subdivide", "SUBSURF")
        sub.levels = sub.render_levels = 2
        sub.subdivision_type = "SIMPLE" if kind in ("cube", "plane") else "CATMULL_CLARK"
        tex = bpy.data.textures.new("displace", str(rng.choice(["CLOUDS", "VORONOI", "MUSGRAVE", "DISTORTED_NOISE"])))
        tex.noise_scale = rng.uniform(0.2, 0.8)
        mod = obj.modifiers.new("displace", "DISPLACE")
        mod.texture, mod.strength, mod.mid_level = tex, rng.uniform(0.04, 0.2), 0.5
        applied.append("displace")
    if rng.random() < 0.35:
        mod = obj.modifiers.new("deform", "SIMPLE_DEFORM")
        mod.deform_method = str(rng.choice(["TWIST", "BEND", "TAPER"]))
        mod.deform_axis = str(rng.choice(["X", "Y", "Z"]))
        if mod.deform_method == "TAPER":
            mod.factor = rng.uniform(-0.9, 0.9)
        else:
            mod.angle = rng.uniform(-1.0, 1.0) * (math.pi if mod.deform_method == "TWIST" else math.pi / 2)
        applied.append(mod.deform_method.lower())
    if rng.random() < 0.35:
        mod = obj.modifiers.new("cut", "BOOLEAN")
        mod.operation, mod.solver = "DIFFERENCE", "EXACT"
        mod.object = _hidden_cutter(rng, obj)
        applied.append("boolean")
    if rng.random() < 0.15:
        mod = obj.modifiers.new("array", "ARRAY")
        mod.count = int(rng.integers(2, 4))
        offset = [0.0, 0.0, 0.0]
        offset[int(rng.integers(0, 3))] = rng.uniform(1.1, 1.6)
        mod.relative_offset_displace = offset
        applied.append("array")
    return applied


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

def _evaluated_world_vertices(objects) -> np.ndarray:
    """(N, 3) world-space vertices of the evaluated (modified) meshes."""
    import bpy

    depsgraph = bpy.context.evaluated_depsgraph_get()
    chunks = [evaluated_mesh(obj, depsgraph, triangles=False)[0] for obj in objects]
    return np.concatenate(chunks) if chunks else np.zeros((0, 3))


def build_object_scene(rng: np.random.Generator, assets: list[Path], log: list[str]) -> dict:
    """One to three random objects (or assets) scaled into a sphere of radius OBJECT_RADIUS at the origin.

    Appends skip reasons (bad assets, degenerate meshes) to `log`. Returns metadata.
    """
    import bpy

    root = bpy.data.objects.new("group", None)
    bpy.context.scene.collection.objects.link(root)
    count = int(rng.choice([1, 1, 1, 2, 2, 3]))
    parts: list = []
    objects: list = []
    for i in range(count):
        group = None
        if assets and rng.random() < 0.5:
            path = assets[int(rng.integers(len(assets)))]
            try:
                group = import_asset(path)
                parts.append(f"asset:{path.name}")
            except Exception as e:  # unreadable or unsupported files are skipped, never fatal
                log.append(f"skipped asset {path}: {e}")
        if group is None:
            kind = str(rng.choice(PRIMITIVES))
            obj = add_primitive(kind, rng)
            mods = add_random_modifiers(obj, kind, rng)
            group = [obj]
            parts.append("+".join([kind, *mods]))
        holder = bpy.data.objects.new(f"part{i}", None)
        bpy.context.scene.collection.objects.link(holder)
        holder.parent = root
        for obj in group:
            obj.parent = holder
            obj.data.materials.clear()
            obj.data.materials.append(random_material(rng, f"mat{i}"))
        # size each part to a unit box before random scaling, so assets of any scale mix
        bpy.context.view_layer.update()
        v = _evaluated_world_vertices(group)
        if len(v) == 0 or np.ptp(v, axis=0).max() < 1e-9:
            log.append(f"skipped part {parts[-1]}: zero-size mesh")
            for obj in group:
                bpy.data.objects.remove(obj)
            continue
        s = 1.0 / np.ptp(v, axis=0).max()
        holder.scale = (s * rng.uniform(0.6, 1.4, 3)).tolist()
        holder.rotation_euler = rng.uniform(0, 2 * math.pi, 3).tolist()
        holder.location = (rng.uniform(-0.6, 0.6, 3) if count > 1 else np.zeros(3)).tolist()
        objects.extend(group)
    bpy.context.view_layer.update()
    v = _evaluated_world_vertices(objects)
    if len(v) == 0:
        raise SkipSample("every part of the object was degenerate")
    centre = 0.5 * (v.min(0) + v.max(0))
    radius = np.linalg.norm(v - centre, axis=1).max()
    root.scale = [OBJECT_RADIUS / radius] * 3
    root.location = (-centre * OBJECT_RADIUS / radius).tolist()
    add_lights(rng, np.zeros(3), 2.0)
    return {"mode": "object", "parts": parts}


def place_object_camera(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, float]:
    """Camera position, viewing direction and horizontal FOV (30–70°) framing the object sphere."""
    fov = math.radians(rng.uniform(30.0, 70.0))
    fill = rng.uniform(0.55, 0.9)  # fraction of the frame the bounding sphere spans
    distance = OBJECT_RADIUS / math.sin(0.5 * fov * fill)
    elevation = rng.uniform(-0.5, 1.1)
    azimuth = rng.uniform(0, 2 * math.pi)
    direction = np.array([math.cos(elevation) * math.cos(azimuth), math.cos(elevation) * math.sin(azimuth), math.sin(elevation)])
    position = direction * distance
    target = rng.normal(0, 0.05, 3)
    return position, target - position, fov


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
            obj = add_primitive("uv_sphere" if kind == "round" else str(rng.choice(["monkey", "torus", "cone", "cylinder"])), rng)
            r = rng.uniform(0.2, 0.5)
            obj.scale = [r * 2] * 3
            obj.location = (x, y, r)
            obj.data.materials.append(mat)
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

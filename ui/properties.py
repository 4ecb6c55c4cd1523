"""Per-scene settings of the World Tracing panel (saved with the .blend)."""

from __future__ import annotations

import bpy
from bpy.props import BoolProperty, BoolVectorProperty, EnumProperty, FloatProperty, IntProperty, PointerProperty

from ..core.geometry.edges import DEFAULT_STRENGTH
from ..core.geometry.far_limit import DEFAULT_SCENE_FACTOR
from ..operators.scene import BuildOptions, match_render, result_layers
from ..preferences import preferences

MAX_LAYERS = 8


def _show_layers_changed(settings, context) -> None:
    if settings.result is None:
        return
    for k, objects in result_layers(settings.result).items():
        for obj in objects:
            obj.hide_viewport = obj.hide_render = not settings.show_layers[k]


def _point_size_changed(settings, context) -> None:
    if settings.result is None:
        return
    for obj in settings.result.objects:
        mod = obj.modifiers.get("Points")
        if mod is not None and mod.node_group is not None:
            mod[mod.node_group.interface.items_tree["Point Size"].identifier] = settings.point_size
            obj.update_tag()


def _result_changed(settings, context) -> None:
    """Selecting a result looks through its camera with its own render size and pixel aspect."""
    if settings.result is not None and "wt_resolution" in settings.result:
        match_render(context.scene, settings.result)


class WT_Settings(bpy.types.PropertyGroup):
    image: PointerProperty(
        type=bpy.types.Image, name="Image", description="Image to trace (open a file or pick a loaded image)"
    )
    mask: PointerProperty(
        type=bpy.types.Image,
        name="Mask",
        description="Object mode: a mask image from any tool (white or opaque = the object), used instead of "
        "the image's alpha or a keyed-out background; the same size as the image",
    )
    far_limit: FloatProperty(
        name="Far Limit",
        default=DEFAULT_SCENE_FACTOR,
        min=0.0,
        soft_max=50.0,
        description="Scene mode: drop points beyond this many times the median visible depth (sky, far "
        "background the model has not learned; 0: keep everything)",
    )
    mode: EnumProperty(
        name="Mode",
        default="object",
        items=[
            ("object", "Object", "Foreground from the alpha channel, or a plain background keyed out"),
            ("scene", "Scene", "The whole frame is geometry"),
            ("dynamic", "Clip", "A clip (an image sequence or a movie opened as the image): geometry for every frame"),
        ],
    )
    steps: IntProperty(name="Steps", default=20, min=1, max=200, description="Sampler steps (more: slower, finer)")
    seed: IntProperty(name="Seed", default=0, min=0, description="Random seed of the first sample")
    samples: IntProperty(
        name="Samples", default=1, min=1, max=8, description="Samples drawn at once; flip between them afterwards"
    )
    output: EnumProperty(
        name="Output",
        default="POINTS",
        items=[
            ("POINTS", "Points", "One point cloud per layer"),
            ("MESHES", "Meshes", "One mesh per layer, cut at depth jumps"),
            ("BOTH", "Both", "Point clouds and meshes"),
        ],
    )
    solid: BoolProperty(
        name="Solid",
        default=False,
        description="Also build one watertight mesh of the whole result, the image projected from the camera "
        "(needs rays with two layers: where a ray enters and leaves the object)",
    )
    solid_detail: IntProperty(
        name="Solid Detail",
        default=BuildOptions.solid_detail,
        min=16,
        soft_max=384,
        max=1024,
        description="Voxels along the diagonal of the solid's bounding box (more: finer and slower)",
    )
    solid_hidden: EnumProperty(
        name="Hidden Faces",
        default=BuildOptions.solid_hidden,
        items=[
            ("NEUTRAL", "Neutral", "Faces the camera does not see get a grey clay material"),
            ("NEAREST", "Nearest Colour", "Faces the camera does not see take the colour of the pixel in front"),
        ],
    )
    solid_max_faces: IntProperty(
        name="Max Faces",
        default=BuildOptions.solid_max_faces,
        min=1000,
        description="A solid with more faces gets a Decimate modifier down to this many (adjustable later)",
    )
    geometry_size: IntProperty(
        name="Geometry Size",
        default=512,
        min=0,
        soft_max=4096,
        subtype="PIXEL",
        description="Longer side of the result in pixels (one point per pixel and layer): larger images are "
        "traced scaled down, which keeps big photos fast, since the model's own detail is far coarser "
        "(0: the image's own size)",
    )
    layers: IntProperty(
        name="Layers", default=MAX_LAYERS, min=1, max=MAX_LAYERS, description="Build the first N layers"
    )
    max_rel_jump: FloatProperty(
        name="Depth Jump",
        default=0.05,
        min=0.0,
        max=2.0,
        precision=3,
        description="Meshes: cut triangles whose far/near depth ratio exceeds 1 + this",
    )
    edge_filter: FloatProperty(
        name="Edge Filter",
        default=DEFAULT_STRENGTH,
        min=0.0,
        soft_max=4.0,
        description="Drop flying points, those hanging between the near and far surface of a depth edge, "
        "when tracing (0: off, 1: default, higher: stricter, smaller depth gaps count)",
    )
    point_size: FloatProperty(
        name="Point Size",
        default=1.0,
        min=0.0,
        soft_max=5.0,
        update=_point_size_changed,
        description="Point size in pixel footprints (1: each point just covers its pixel)",
    )
    result: PointerProperty(
        type=bpy.types.Collection,
        name="Result",
        update=_result_changed,
        description="The traced result the buttons below act on",
    )
    show_layers: BoolVectorProperty(
        name="Show Layers", size=MAX_LAYERS, default=(True,) * MAX_LAYERS, update=_show_layers_changed
    )
    sample: IntProperty(
        name="Sample", default=0, min=0, max=7, options={"HIDDEN"}, description="Which sample the result shows"
    )
    defaults_applied: BoolProperty(default=False, options={"HIDDEN"})


def apply_preference_defaults(scenes) -> None:
    """Give scenes that never had them the preferences' default steps and samples."""
    prefs = preferences()
    for scene in scenes:
        settings = scene.world_tracing
        if not settings.defaults_applied:
            settings.steps, settings.samples = prefs.default_steps, prefs.default_samples
            settings.defaults_applied = True


def register() -> None:
    bpy.types.Scene.world_tracing = PointerProperty(type=WT_Settings)


def unregister() -> None:
    del bpy.types.Scene.world_tracing

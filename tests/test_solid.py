"""Tests for core.geometry.solid (one watertight mesh from a layered point map) and `python -m core solid`.

Every input is a layered map traced here through an OpenCV pinhole: a sphere (analytically), a torus and
a box with a round hole (by stepping along each ray through an inside test, then bisection).
"""

import numpy as np
import pytest
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from test_meshing import read_ply

from core.__main__ import main
from core.geometry.occupancy import MAX_VOXELS, occupancy_grid
from core.geometry.solid import solid_mesh
from core.layered import LayeredPointMap

SIZE = 96
FOCAL = 1.1 * SIZE
K = np.array([[FOCAL, 0, SIZE / 2], [0, FOCAL, SIZE / 2], [0, 0, 1]], dtype=np.float32)
CENTRE = np.array([0.0, 0.0, 3.0])  # every shape sits 3 units in front of the camera
RADIUS = 0.8


def rays() -> np.ndarray:
    """(H, W, 3) rays through the pixel centres, scaled to z = 1 (a point at depth z is z · ray)."""
    v, u = np.mgrid[0:SIZE, 0:SIZE] + 0.5
    return np.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], np.ones((SIZE, SIZE))], axis=-1)


def sphere_map() -> tuple[np.ndarray, np.ndarray]:
    """Sphere of RADIUS at CENTRE: layer 0 the entry, layer 1 the exit of each ray (a quadratic in z).

    Returns points (2, H, W, 3) float32 and valid (2, H, W) bool.
    """
    d = rays()
    a, b, c = (d * d).sum(-1), -2 * d @ CENTRE, CENTRE @ CENTRE - RADIUS**2
    disc = b * b - 4 * a * c
    hit = disc > 0
    root = np.sqrt(np.where(hit, disc, 0))
    z = np.stack([(-b - root) / (2 * a), (-b + root) / (2 * a)])  # (2, H, W)
    valid = np.stack([hit, hit])
    return (np.where(valid[..., None], z[..., None] * d, 0)).astype(np.float32), valid


def traced_map(inside, layers: int = 4, steps: int = 400) -> tuple[np.ndarray, np.ndarray]:
    """Every crossing of each ray with the solid `inside` ((..., 3) points → (...) bool), front to back.

    Steps z over [1.5, 4.5] (the camera and the far end outside), then bisects each change of inside.
    Returns points (layers, H, W, 3) float32 and valid (layers, H, W) bool.
    """
    d = rays()
    z = np.linspace(1.5, 4.5, steps)
    state = inside(d[:, :, None, :] * z[:, None])  # (H, W, steps)
    row, col, step = np.nonzero(state[..., 1:] != state[..., :-1])
    lo, hi, first = z[step], z[step + 1], state[row, col, step]
    for _ in range(30):
        mid = (lo + hi) / 2
        same = inside(d[row, col] * mid[:, None]) == first
        lo, hi = np.where(same, mid, lo), np.where(same, hi, mid)
    flat = row * SIZE + col  # sorted: np.nonzero walks C order
    layer = np.arange(len(flat)) - np.searchsorted(flat, flat)
    assert layer.max() < layers, f"a ray crosses the solid {layer.max() + 1} times"
    points, valid = np.zeros((layers, SIZE, SIZE, 3), np.float32), np.zeros((layers, SIZE, SIZE), bool)
    points[layer, row, col] = d[row, col] * ((lo + hi) / 2)[:, None]
    valid[layer, row, col] = True
    return points, valid


def torus(tilt: float):
    """The inside test of a torus (tube radius 0.3 around a circle of radius 0.8) at CENTRE, its axis turned
    `tilt` degrees from the optical axis about the x axis."""
    c, s = np.cos(np.radians(tilt)), np.sin(np.radians(tilt))

    def inside(p: np.ndarray) -> np.ndarray:
        q = p - CENTRE
        y, z = c * q[..., 1] + s * q[..., 2], -s * q[..., 1] + c * q[..., 2]
        return (np.hypot(q[..., 0], y) - 0.8) ** 2 + z**2 < 0.3**2

    return inside


def holed_box(p: np.ndarray) -> np.ndarray:
    """Inside a 1.4 × 1.4 × 0.6 box at CENTRE with a round hole of radius 0.3 along the optical axis."""
    q = np.abs(p - CENTRE)
    return (q[..., 0] < 0.7) & (q[..., 1] < 0.7) & (q[..., 2] < 0.3) & (np.hypot(p[..., 0], p[..., 1]) > 0.3)


def signed_volume(vertices: np.ndarray, faces: np.ndarray) -> float:
    """Σ a · (b × c) / 6 over the triangles: the enclosed volume, positive for outward normals."""
    a, b, c = (vertices[faces[:, k]].astype(np.float64) for k in range(3))
    return float(np.einsum("ij,ij->", a, np.cross(b, c)) / 6)


def check_closed_and_oriented(faces: np.ndarray) -> None:
    """Every edge lies on exactly two faces, which run it in opposite directions (closed, manifold, oriented)."""
    directed = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    unique = np.unique(directed, axis=0)
    assert len(unique) == len(directed), "an edge is run twice in the same direction"
    forward, backward = (set(map(tuple, e)) for e in (unique, unique[:, ::-1]))
    assert forward == backward, f"{len(forward - backward)} edges border only one face"


def topology(faces: np.ndarray) -> tuple[int, int]:
    """(connected components, Euler characteristic V − E + F) of a triangle mesh."""
    used = np.unique(faces)
    edges = np.unique(np.sort(np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]]), axis=1), axis=0)
    n = faces.max() + 1
    graph = coo_matrix((np.ones(len(edges)), (edges[:, 0], edges[:, 1])), shape=(n, n))
    components = connected_components(graph, directed=False)[1][used]
    return len(np.unique(components)), len(used) - len(edges) + len(faces)


def ray_hits(vertices: np.ndarray, faces: np.ndarray, direction: np.ndarray) -> int:
    """How many triangles the ray from the camera centre along `direction` (3,) passes through (Möller–Trumbore)."""
    a, b, c = (vertices[faces[:, k]].astype(np.float64) for k in range(3))
    e1, e2 = b - a, c - a
    p = np.cross(direction, e2)
    det = (e1 * p).sum(-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        u = (-a * p).sum(-1) / det
        q = np.cross(-a, e1)
        v = (q @ direction) / det
        t = (e2 * q).sum(-1) / det
        return int(np.sum((u >= 0) & (v >= 0) & (u + v <= 1) & (t > 0)))  # NaN (parallel) compares False


def test_sphere_is_closed_outward_and_holds_its_volume():
    """The sphere's mesh is closed and oriented, encloses 4/3·π·r³ within 3 %, and is smooth: its vertices lie
    on the sphere and its faces face along the radius (not voxel stairs). Vertices in front of the plane of
    the silhouette's rim come from layer 0 (entries), behind it from layer 1 (exits)."""
    points, valid = sphere_map()
    vertices, faces, vertex_layer = solid_mesh(points, valid, K)
    assert vertices.dtype == np.float32 and faces.dtype == np.int64 and vertex_layer.dtype == np.int32
    check_closed_and_oriented(faces)
    assert topology(faces) == (1, 2)
    volume = signed_volume(vertices, faces)
    assert volume == pytest.approx(4 / 3 * np.pi * RADIUS**3, rel=0.03)
    distance = np.linalg.norm(vertices - CENTRE, axis=1)
    assert np.abs(distance - RADIUS).max() < 0.03 * RADIUS
    normal = np.cross(*(vertices[faces[:, k]] - vertices[faces[:, 0]] for k in (1, 2)))
    radial = vertices[faces].mean(axis=1) - CENTRE
    cosine = (normal * radial).sum(-1) / np.linalg.norm(normal, axis=-1) / np.linalg.norm(radial, axis=-1)
    assert np.median(cosine) > np.cos(np.radians(10)), "stair-stepped: face normals stray from the radius"
    depth = vertices[:, 2] - (CENTRE[2] - RADIUS**2 / CENTRE[2])  # from the plane of the silhouette's rim
    clear = np.abs(depth) > 0.1 * RADIUS
    assert np.array_equal(vertex_layer[clear], (depth[clear] > 0).astype(np.int32))


@pytest.mark.parametrize("tilt, layers", [(0, 2), (70, 4)])
def test_torus_is_one_closed_surface_of_genus_one(tilt, layers):
    """A torus seen along its axis (every ray crosses the tube at most once: 2 layers) or tilted 70° (rays
    cross both sides of the tube: 4 layers) meshes as one closed surface with V − E + F = 0, holds its
    volume 2π²·R·r², and its vertices come from every layer."""
    points, valid = traced_map(torus(tilt))
    assert valid[layers - 1].sum() > 100 and not valid[layers:].any()
    vertices, faces, vertex_layer = solid_mesh(points, valid, K)
    check_closed_and_oriented(faces)
    assert topology(faces) == (1, 0)
    assert signed_volume(vertices, faces) == pytest.approx(2 * np.pi**2 * 0.8 * 0.3**2, rel=0.05)
    assert np.array_equal(np.unique(vertex_layer), np.arange(layers))


def test_a_hole_along_the_view_stays_open():
    """A box with a through hole is one genus-1 surface; the optical axis (through the hole) hits nothing,
    a ray through the box's rim hits the mesh twice (in and out)."""
    points, valid = traced_map(holed_box)
    vertices, faces, _ = solid_mesh(points, valid, K)
    check_closed_and_oriented(faces)
    assert topology(faces) == (1, 0)
    assert ray_hits(vertices, faces, np.array([0.0, 0.0, 1.0])) == 0
    assert ray_hits(vertices, faces, np.array([0.5 / 3, 0.0, 1.0])) == 2


def test_grid_marks_inside_between_entry_and_exit():
    """The voxel at the sphere's centre is inside, the corners of the grid are outside, and the filled
    fraction of the grid is the sphere's over the bounding cube's volume (π/6 less the padding)."""
    points, valid = sphere_map()
    grid = occupancy_grid(points, valid, K, voxel_size=0.05)
    centre = np.round((CENTRE - grid.origin) / grid.voxel_size).astype(int)[::-1]
    assert grid.inside[tuple(centre)] and not grid.inside[0, 0, 0] and not grid.inside[-1, -1, -1]
    filled = grid.inside.sum() * grid.voxel_size**3
    assert filled == pytest.approx(4 / 3 * np.pi * RADIUS**3, rel=0.05)


def test_max_faces_coarsens_the_mesh():
    """With max_faces below the default mesh's count, the voxels grow until the mesh fits; it stays closed."""
    points, valid = sphere_map()
    _, faces, _ = solid_mesh(points, valid, K)
    _, fewer, _ = solid_mesh(points, valid, K, max_faces=len(faces) // 4)
    assert len(fewer) <= len(faces) // 4
    check_closed_and_oriented(fewer)


def test_bad_results_are_refused():
    """One layer, nothing valid or far too many voxels: a ValueError that says which."""
    points, valid = sphere_map()
    with pytest.raises(ValueError, match="at least two layers"):
        solid_mesh(points, valid & np.array([True, False])[:, None, None], K)
    with pytest.raises(ValueError, match="at least two layers"):
        solid_mesh(points[:1], valid[:1], K)
    with pytest.raises(ValueError, match="empty"):
        solid_mesh(points, np.zeros_like(valid), K)
    with pytest.raises(ValueError, match=f"more than {MAX_VOXELS:,}"):
        occupancy_grid(points, valid, K, voxel_size=1e-3)


def save_trace(path, points: np.ndarray, valid: np.ndarray) -> None:
    """A `trace` .npz of the map, with a grey image."""
    LayeredPointMap(points, valid, K, np.full((SIZE, SIZE, 3), 128, np.uint8)).save(path)


def run_cli(*args: str) -> int:
    """Exit status of `python -m core solid ARGS...`, run in this process."""
    return main(["solid", *map(str, args)])


def test_cli_writes_ply_and_obj(tmp_path, capsys):
    """`solid` writes the mesh solid_mesh builds: a PLY with its wt_layer per vertex, an OBJ with its counts."""
    points, valid = sphere_map()
    save_trace(tmp_path / "trace.npz", points, valid)
    vertices, faces, vertex_layer = solid_mesh(points, valid, K)
    assert run_cli(tmp_path / "trace.npz", "--out", tmp_path / "solid.ply") == 0
    assert f"{len(faces):,} faces" in capsys.readouterr().out
    table, ply_faces = read_ply(tmp_path / "solid.ply")
    assert np.array_equal(np.stack([table["x"], table["y"], table["z"]], -1), vertices)
    assert np.array_equal(table["wt_layer"], vertex_layer) and np.array_equal(ply_faces, faces)
    assert run_cli(tmp_path / "trace.npz", "--out", tmp_path / "solid.obj", "--max-faces", len(faces) // 2) == 0
    lines = (tmp_path / "solid.obj").read_text().splitlines()
    kinds = [line.split(" ", 1)[0] for line in lines]
    assert 0 < kinds.count("f") <= len(faces) // 2 and kinds.count("v") == kinds.count("vt")
    obj_faces = np.array([[int(w.split("/")[0]) - 1 for w in line.split()[1:]] for line in lines if line[0] == "f"])
    check_closed_and_oriented(obj_faces)


@pytest.mark.parametrize(
    "case, args",
    [
        ("missing", ["absent.npz", "--out", "solid.ply"]),
        ("not a trace", ["notes.npz", "--out", "solid.ply"]),
        ("one layer", ["one.npz", "--out", "solid.ply"]),
        ("empty", ["empty.npz", "--out", "solid.ply"]),
        ("too many voxels", ["trace.npz", "--out", "solid.ply", "--voxel-size", "0.001"]),
        ("unknown extension", ["trace.npz", "--out", "solid.stl"]),
    ],
)
def test_cli_refuses_bad_input_without_writing(tmp_path, monkeypatch, capsys, case, args):
    """Each bad input: exit status 2, one `error: ...` line, and no file written."""
    points, valid = sphere_map()
    save_trace(tmp_path / "trace.npz", points, valid)
    save_trace(tmp_path / "one.npz", points[:1], valid[:1])
    save_trace(tmp_path / "empty.npz", points, np.zeros_like(valid))
    (tmp_path / "notes.npz").write_text("not a zip")
    before = set(tmp_path.iterdir())
    monkeypatch.chdir(tmp_path)
    assert run_cli(*args) == 2, case
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    assert set(tmp_path.iterdir()) == before

"""Low-poly visual meshes for the software rasterizer.

On a CPU, MuJoCo renders through Mesa's llvmpipe, whose cost follows the number of triangles,
not pixels: a LIBERO scene's visual meshes hold ~300k faces (one black bowl 42.5k). `lowpoly_xml`
rewrites a model's XML so every visual mesh above `max_faces` is drawn from a decimated copy of
its asset file, while physics stays bit-identical:

- a visual geom (contype = conaffinity = 0) may still carry mass (LIBERO's objects give their
  visual mesh a density), so the original geom stays in the model, moved to group 3 (never
  rendered), and a massless twin in the original group draws the decimated mesh;
- the copy decimates the asset file itself (its own frame: MuJoCo re-centres a mesh and offsets
  the geom to match, so the twin sits exactly where the original does) and keeps texture
  coordinates, chosen per face corner from the original surface patch (UV chart) the face lies on;
- copies are cached once per installation under ~/.cache/vla/lowpoly (or $VLA_CACHE), keyed by
  the source file's content hash and the face budget, written atomically (workers share them).
"""

from __future__ import annotations

import hashlib
import os
import struct
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

VERSION = 2  # bump when the decimation changes, so stale copies are not reused
HIDDEN_GROUP = "3"  # MuJoCo renders geom groups 0-2 by default
TWIN_SUFFIX = "__lowpoly"

# Render settings, cheapest last. "fast": no reflections, no multi-sampling (~2x "full").
# "lowpoly": "fast" with every visual mesh above LOWPOLY_MAX_FACES drawn from a decimated copy
# (lowpoly_xml below; physics unchanged). A dataset records the setting it was rendered with.
RENDER_QUALITIES = ("full", "fast", "lowpoly")
DEFAULT_RENDER = "lowpoly"
LOWPOLY_MAX_FACES = 2000


def render_xml_processor(quality: str):
    """The XML processor (robosuite's set_xml_processor) for a render setting, LIBERO's or RoboCasa's."""
    def process(xml: str) -> str:
        if quality == "full":
            return xml
        if quality == "lowpoly":
            xml = lowpoly_xml(xml, LOWPOLY_MAX_FACES)
        return no_multisampling(xml)

    return process


def no_multisampling(xml: str) -> str:
    """Set <visual><quality offsamples="0"/> in a MuJoCo model: no offscreen multi-sampling."""
    root = ET.fromstring(xml)
    visual = root.find("visual")
    if visual is None:
        visual = ET.SubElement(root, "visual")
    quality = visual.find("quality")
    if quality is None:
        quality = ET.SubElement(visual, "quality")
    quality.set("offsamples", "0")
    return ET.tostring(root, encoding="unicode")


def cache_dir() -> Path:
    root = Path(os.environ.get("VLA_CACHE", Path.home() / ".cache" / "vla"))
    return root / "lowpoly"


# -- mesh files -----------------------------------------------------------------------------
def read_mesh(path: str | Path) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(corner positions float64[F*3, 3], faces int64[F, 3] into them, uv float32[F*3, 2] or None)
    for MuJoCo's mesh formats: .msh (binary), .stl (binary or ASCII), .obj (polygons fanned)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".msh":
        data = path.read_bytes()
        nv, nn, nt, nf = struct.unpack_from("<4i", data)
        o = 16
        v = np.frombuffer(data, "<f4", 3 * nv, o).reshape(-1, 3); o += 12 * nv + 12 * nn
        t = np.frombuffer(data, "<f4", 2 * nt, o).reshape(-1, 2); o += 8 * nt
        f = np.frombuffer(data, "<i4", 3 * nf, o).reshape(-1, 3)
        return v[f].reshape(-1, 3).astype(np.float64), _corner_faces(nf), (t[f].reshape(-1, 2) if nt else None)
    if suffix == ".stl":
        data = path.read_bytes()
        nf = struct.unpack_from("<I", data, 80)[0] if len(data) >= 84 else -1
        if len(data) == 84 + 50 * nf:
            rec = np.frombuffer(data, np.dtype([("n", "<f4", 3), ("v", "<f4", (3, 3)), ("a", "<u2")]), nf, 84)
            v = rec["v"].reshape(-1, 3)
        else:  # ASCII
            words = data.decode("ascii", "replace").split()
            idx = [i for i, w in enumerate(words) if w == "vertex"]
            v = np.array([[float(words[i + 1]), float(words[i + 2]), float(words[i + 3])] for i in idx])
        return v.astype(np.float64), _corner_faces(len(v) // 3), None
    if suffix == ".obj":
        vs, vts, corners = [], [], []
        for line in path.read_text(errors="replace").splitlines():
            parts = line.split()
            if not parts:
                continue
            if parts[0] == "v":
                vs.append([float(x) for x in parts[1:4]])
            elif parts[0] == "vt":
                vts.append([float(x) for x in parts[1:3]])
            elif parts[0] == "f":
                ids = []
                for p in parts[1:]:
                    fields = p.split("/")
                    vi = int(fields[0])
                    ti = int(fields[1]) if len(fields) > 1 and fields[1] else 0
                    ids.append((vi - 1 if vi > 0 else len(vs) + vi, ti - 1 if ti > 0 else (len(vts) + ti if ti else -1)))
                for k in range(1, len(ids) - 1):  # fan a polygon into triangles
                    corners += [ids[0], ids[k], ids[k + 1]]
        c = np.array(corners, dtype=np.int64).reshape(-1, 2)
        v = np.asarray(vs, np.float64)[c[:, 0]]
        uv = np.asarray(vts, np.float32)[np.maximum(c[:, 1], 0)] if vts and (c[:, 1] >= 0).all() else None
        return v, _corner_faces(len(c) // 3), uv
    raise ValueError(f"{path}: unsupported mesh format {suffix!r} (expected .msh, .stl or .obj)")


def _corner_faces(n_faces: int) -> np.ndarray:
    return np.arange(3 * n_faces, dtype=np.int64).reshape(-1, 3)


def write_msh(path: Path, points: np.ndarray, faces: np.ndarray, uv: np.ndarray | None,
              normals: np.ndarray | None = None) -> None:
    """MuJoCo's binary .msh: counts (vertices, normals, texcoords, faces), then the arrays (per
    vertex). Without normals MuJoCo computes them."""
    nn, nt = (0 if normals is None else len(normals)), (0 if uv is None else len(uv))
    parts = [struct.pack("<4i", len(points), nn, nt, len(faces)), np.asarray(points, "<f4").tobytes()]
    if normals is not None:
        parts.append(np.asarray(normals, "<f4").tobytes())
    if uv is not None:
        parts.append(np.asarray(uv, "<f4").tobytes())
    parts.append(np.asarray(faces, "<i4").tobytes())
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(b"".join(parts))
    os.replace(tmp, path)  # a worker never reads half a file


# -- decimation -----------------------------------------------------------------------------
def decimate(points: np.ndarray, faces: np.ndarray, uv: np.ndarray | None, max_faces: int):
    """Quadric decimation to at most `max_faces` faces on the position-welded surface (seams do
    not become holes). Returns (points, faces, uv, normals); uv and normals are None for an
    untextured mesh. Each output face corner takes its texture coordinate and normal from the
    nearest original vertex that lies in the UV chart of the original face nearest to the output
    face and faces the same way."""
    import fast_simplification
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components
    from scipy.spatial import cKDTree

    pos, pos_id = np.unique(points, axis=0, return_inverse=True)
    pos_id = pos_id.reshape(-1)
    out_p, out_f = fast_simplification.simplify(pos, pos_id[faces], target_count=max_faces)
    out_f = out_f.astype(np.int64)
    if uv is None:
        return out_p, out_f, None, None
    # original vertices = distinct (position, uv); charts = faces connected through them
    key = np.concatenate([points.astype(np.float32), uv.astype(np.float32)], axis=1)
    vert, vert_id = np.unique(key, axis=0, return_inverse=True)
    vert_id = vert_id.reshape(-1)
    fv = vert_id[faces]
    edges = np.concatenate([fv[:, [0, 1]], fv[:, [1, 2]]])
    graph = coo_matrix((np.ones(len(edges)), (edges[:, 0], edges[:, 1])), shape=(len(vert), len(vert)))
    _, vert_chart = connected_components(graph, directed=False)
    face_chart = vert_chart[fv[:, 0]]
    # a vertex's normal: its faces' area-weighted normals (thin walls: the inner and outer surface
    # lie millimetres apart, and a corner must take its uv from the side its face looks to)
    cross = np.cross(points[faces[:, 1]] - points[faces[:, 0]], points[faces[:, 2]] - points[faces[:, 0]])
    vert_normal = np.zeros((len(vert), 3))
    for j in range(3):
        np.add.at(vert_normal, fv[:, j], cross)
    vert_normal /= np.linalg.norm(vert_normal, axis=1, keepdims=True) + 1e-12
    tri = out_p[out_f]
    out_normal = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    out_normal /= np.linalg.norm(out_normal, axis=1, keepdims=True) + 1e-12
    _, nearest_face = cKDTree(points[faces].mean(axis=1)).query(tri.mean(axis=1))
    corner_chart = np.repeat(face_chart[nearest_face], 3)
    corner_normal = np.repeat(out_normal, 3, axis=0)
    corner_pos = tri.reshape(-1, 3)
    k = min(32, len(vert))
    dist, near = cKDTree(vert[:, :3]).query(corner_pos, k=k)
    dist, near = dist.reshape(len(corner_pos), k), near.reshape(len(corner_pos), k)
    facing = np.einsum("nkc,nc->nk", vert_normal[near], corner_normal) > 0.2
    same = vert_chart[near] == corner_chart[:, None]
    # nearest neighbour of the same chart facing the same way; then same chart; then nearest
    score = dist + np.where(same, 0.0, 1e6) + np.where(facing, 0.0, 1e3)
    pick = near[np.arange(len(near)), np.argmin(score, axis=1)]
    # output vertices = distinct (decimated vertex, uv) corner pairs
    corner_key = np.stack([out_f.reshape(-1), pick], axis=1)
    uniq, corner_id = np.unique(corner_key, axis=0, return_inverse=True)
    return out_p[uniq[:, 0]], corner_id.reshape(-1, 3), vert[uniq[:, 1], 3:], vert_normal[uniq[:, 1]]


def lowpoly_file(source: str | Path, max_faces: int) -> Path | None:
    """The cached decimated copy of a mesh file, made on first use; None when the file already
    has at most `max_faces` faces (it is drawn as it is)."""
    source = Path(source)
    digest = hashlib.sha256(source.read_bytes()).hexdigest()[:24]
    base = cache_dir() / f"{digest}_v{VERSION}_f{max_faces}"
    out, keep = base.with_suffix(".msh"), base.with_suffix(".keep")
    if out.exists():
        return out
    if keep.exists():
        return None
    base.parent.mkdir(parents=True, exist_ok=True)
    points, faces, uv = read_mesh(source)
    if len(faces) <= max_faces:
        keep.touch()
        return None
    write_msh(out, *decimate(points, faces, uv, max_faces))
    return out


# -- model XML ------------------------------------------------------------------------------
def lowpoly_xml(xml: str, max_faces: int) -> str:
    """The model with each visual mesh geom above `max_faces` drawn by a decimated twin (see the
    module docstring); collision geoms, masses and every other element are left as they are."""
    root = ET.fromstring(xml)
    asset = root.find("asset")
    if asset is None:
        return xml
    meshes = {m.get("name"): m for m in asset.findall("mesh") if m.get("name") and m.get("file")}
    twins: dict[str, str | None] = {}
    for body in list(root.iter()):  # a snapshot: twins are inserted while walking
        for i, geom in reversed(list(enumerate(body))):
            if geom.tag != "geom" or geom.get("type") != "mesh" or geom.get("mesh") not in meshes:
                continue
            if geom.get("contype", "1") != "0" or geom.get("conaffinity", "1") != "0" or geom.get("group", "0") not in ("0", "1", "2"):
                continue  # collision geoms (and geoms already hidden) stay untouched
            name = geom.get("mesh")
            if name not in twins:
                twins[name] = _twin_mesh(asset, meshes[name], max_faces)
            if twins[name] is None:
                continue
            twin = ET.Element("geom", dict(geom.attrib))
            twin.attrib.pop("density", None)
            twin.set("mass", "0")
            twin.set("mesh", twins[name])
            if geom.get("name"):
                twin.set("name", geom.get("name") + TWIN_SUFFIX)
            geom.set("group", HIDDEN_GROUP)
            body.insert(i + 1, twin)
    return ET.tostring(root, encoding="unicode")


def _twin_mesh(asset: ET.Element, mesh: ET.Element, max_faces: int) -> str | None:
    path = lowpoly_file(mesh.get("file"), max_faces)
    if path is None:
        return None
    attrib = dict(mesh.attrib, name=mesh.get("name") + TWIN_SUFFIX, file=str(path))
    asset.append(ET.Element("mesh", attrib))
    return attrib["name"]

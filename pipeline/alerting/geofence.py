"""Named areas whose notice an alert must carry when its read was made inside them.

Example: a reservation whose notice says to contact tribal law enforcement before
entering reservation lands. The areas come from the YAML file named by the setting
`geofences_file` (see infra/geofences.example.yaml); a read inside one gets that
area's notice on every alert it raises. Point-in-polygon is ray casting on WGS84
degrees, which is exact enough for areas much smaller than a hemisphere that do not
cross the antimeridian.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from alpr.core.errors import ConfigError


@dataclass(frozen=True)
class Geofence:
    name: str
    notice: str
    points: tuple[tuple[float, float], ...]  # (lat, lon), first point not repeated at the end
    box: tuple[float, float, float, float]   # lat_min, lat_max, lon_min, lon_max: a cheap first test

    def contains(self, lat: float, lon: float) -> bool:
        lat_min, lat_max, lon_min, lon_max = self.box
        if not (lat_min <= lat <= lat_max and lon_min <= lon <= lon_max):
            return False
        inside = False
        pts = self.points
        j = len(pts) - 1
        for i in range(len(pts)):
            yi, xi = pts[i]
            yj, xj = pts[j]
            if (yi > lat) != (yj > lat) and lon < (xj - xi) * (lat - yi) / (yj - yi) + xi:
                inside = not inside
            j = i
        return inside


def make_geofence(name: str, notice: str, points: list) -> Geofence:
    pts = tuple((float(p[0]), float(p[1])) for p in points)
    if len(pts) > 1 and pts[0] == pts[-1]:
        pts = pts[:-1]
    lats, lons = [p[0] for p in pts], [p[1] for p in pts]
    return Geofence(name, notice, pts, (min(lats), max(lats), min(lons), max(lons)))


def load_geofences(path: Path | None) -> list[Geofence]:
    """Every geofence in the file; any problem is one ConfigError naming the file and the area."""
    if path is None:
        return []
    where = f"geofences file {path} (setting ALPR_GEOFENCES_FILE)"
    try:
        doc = yaml.safe_load(Path(path).read_text())
    except FileNotFoundError:
        raise ConfigError(f"{where}: no such file") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{where}: not valid YAML ({str(exc).splitlines()[0]})") from None
    items = (doc or {}).get("geofences") if isinstance(doc, dict) else None
    if not isinstance(items, list):
        raise ConfigError(f"{where}: expected a top-level 'geofences:' list")
    out = []
    for n, item in enumerate(items, 1):
        name = item.get("name") if isinstance(item, dict) else None
        label = f"{where}: geofence {n} ({name or 'no name'})"
        if not isinstance(item, dict) or not name or not item.get("notice"):
            raise ConfigError(f"{label}: needs 'name', 'notice' and 'points'")
        points = item.get("points")
        if not isinstance(points, list) or len(points) < 3:
            raise ConfigError(f"{label}: 'points' must list at least 3 [lat, lon] pairs")
        for p in points:
            ok = isinstance(p, list) and len(p) == 2 and all(isinstance(v, (int, float)) for v in p)
            if not ok or not (-90 <= p[0] <= 90 and -180 <= p[1] <= 180):
                raise ConfigError(f"{label}: point {p!r} is not [lat, lon] in degrees")
        out.append(make_geofence(str(name), str(item["notice"]), points))
    return out


def notices_for(geofences: list[Geofence], lat: float, lon: float) -> list[str]:
    """Notices of every area containing the point, in file order, each once."""
    out: list[str] = []
    for g in geofences:
        if g.contains(lat, lon) and g.notice not in out:
            out.append(g.notice)
    return out

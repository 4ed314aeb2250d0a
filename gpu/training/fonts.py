"""Fonts the plate renderer may use: each from a PyPI wheel or OpenCV, each with its licence.

US plates are set in condensed sans-serif faces; the closest permissively licensed families
installable from PyPI are Google Fonts' condensed sans families, packaged one per wheel by
`fontpkg` (SIL Open Font License 1.1: the fonts may be used to render training images, and
rendered images are not "Font Software"). OpenCV's built-in Hershey stroke fonts (BSD-style,
part of OpenCV) add strokes no TrueType face has.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from alpr.core.errors import ConfigError


class FontsMissing(ConfigError):
    """A font wheel the generator needs is not installed (pip install -e '.[train]')."""


@dataclass(frozen=True)
class Face:
    """One TrueType face: where it is, and the weights worth drawing it at."""

    family: str
    package: str  # importable package of the wheel that carries the file
    file: str  # inside the package's files/ folder
    licence: str
    weights: tuple[int, ...] = ()  # for variable fonts: values of the Weight axis to draw

    @property
    def path(self) -> Path:
        spec = importlib.util.find_spec(self.package)
        if spec is None or spec.origin is None:
            raise FontsMissing(f"font package {self.package!r} is not installed (pip install -e '.[train]')")
        return Path(spec.origin).parent / "files" / self.file


# Plate characters: bold-ish condensed faces, roughly the weight of embossed or printed plates.
PLATE_FACES: tuple[Face, ...] = (
    Face("Barlow Condensed", "fontpkg_barlow_condensed", "BarlowCondensed-SemiBold.ttf", "OFL-1.1"),
    Face("Barlow Condensed", "fontpkg_barlow_condensed", "BarlowCondensed-Bold.ttf", "OFL-1.1"),
    Face("Barlow Condensed", "fontpkg_barlow_condensed", "BarlowCondensed-Medium.ttf", "OFL-1.1"),
    Face("Fira Sans Condensed", "fontpkg_fira_sans_condensed", "FiraSansCondensed-Medium.ttf", "OFL-1.1"),
    Face("Fira Sans Condensed", "fontpkg_fira_sans_condensed", "FiraSansCondensed-Bold.ttf", "OFL-1.1"),
    Face("IBM Plex Sans Condensed", "fontpkg_ibm_plex_sans_condensed", "IBMPlexSansCondensed-SemiBold.ttf", "OFL-1.1"),
    Face("IBM Plex Sans Condensed", "fontpkg_ibm_plex_sans_condensed", "IBMPlexSansCondensed-Medium.ttf", "OFL-1.1"),
    Face("Oswald", "fontpkg_oswald", "Oswald[wght].ttf", "OFL-1.1", (400, 500, 600)),
    Face("PT Sans Narrow", "fontpkg_pt_sans_narrow", "PT_Sans-Narrow-Web-Bold.ttf", "OFL-1.1"),
    Face("PT Sans Narrow", "fontpkg_pt_sans_narrow", "PT_Sans-Narrow-Web-Regular.ttf", "OFL-1.1"),
    Face("Roboto Condensed", "fontpkg_roboto_condensed", "RobotoCondensed[wght].ttf", "OFL-1.1", (500, 600, 700)),
)

# State names and slogans: any face, italics included (many plates script their state name).
CAPTION_FACES: tuple[Face, ...] = PLATE_FACES + (
    Face("Barlow Condensed", "fontpkg_barlow_condensed", "BarlowCondensed-BoldItalic.ttf", "OFL-1.1"),
    Face("Fira Sans Condensed", "fontpkg_fira_sans_condensed", "FiraSansCondensed-BlackItalic.ttf", "OFL-1.1"),
    Face("Roboto Condensed", "fontpkg_roboto_condensed", "RobotoCondensed-Italic[wght].ttf", "OFL-1.1", (400, 700)),
)

# cv2.putText faces, drawn with thick strokes for plate characters.
HERSHEY_FACES: tuple[int, ...] = (0, 2, 3)  # FONT_HERSHEY_SIMPLEX, DUPLEX, TRIPLEX
HERSHEY_LICENCE = "BSD-3-Clause / Apache-2.0 (OpenCV built-in Hershey fonts)"


@cache
def truetype(face: Face, size: int, weight: int = 0):
    """A Pillow font object for face at size px (and weight, for variable faces); cached."""
    from PIL import ImageFont

    font = ImageFont.truetype(str(face.path), size)
    if weight:
        font.set_variation_by_axes([weight])
    return font


def check_installed() -> None:
    """Fail fast, naming the missing wheel, before a long run starts."""
    for face in CAPTION_FACES:
        if not face.path.is_file():
            raise FontsMissing(f"{face.path} is missing from the installed {face.package!r} wheel")

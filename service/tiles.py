"""Cutting an image plane into overlapping tiles of one size, and stitching the model's tiles back without seams.

Every tile of a plane has the same shape, so that the tiles of one image, and of every image cut the
same way, share forward passes. Along each side the tiles are as few as the tile size allows and no
longer than they need to be to cover it with the overlap (``tile_side``): cut at the full tile size, a
1024-pixel side would take three 512-pixel tiles, 1,536 pixels of forward for 1,024 of image, where three
of 368 take 1,104. The last tile of a row or column is moved back to end at the border rather than
padded, so no tile sees anything but the image. Near a tile's inner edges a convolutional model sees
less context than it would in the whole image; stitching weighs each tile's output down linearly across
the overlap there (and not at the image's own borders), so that every output pixel is mostly the work of
the tile that saw most around it, and there is no step at a tile's edge.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def tile_side(length: int, tile: int, overlap: int) -> int:
    """The side of the tiles along a side of ``length``: as many tiles as tiles of ``tile`` need, each as short as
    covering ``length`` with that many allows, rounded up to a multiple of 8 (the model pads a side to a multiple
    of its 2**depth, work for nothing) but never past ``tile``."""
    if length <= tile:
        return length
    count = -(-(length - overlap) // (tile - overlap))
    shortest = -(-(length + (count - 1) * overlap) // count)
    return min(tile, -(-shortest // 8) * 8)


def starts(length: int, tile: int, overlap: int) -> list[int]:
    """Where the tiles along one side begin: ``tile`` apart less ``overlap``, the last one ending at the border."""
    if length <= tile:
        return [0]
    stride = tile - overlap
    positions = list(range(0, length - tile, stride))
    positions.append(length - tile)
    return positions


@dataclass(frozen=True)
class Grid:
    """How one plane of ``height``×``width`` is cut: tile shape and the top-left corner of every tile."""

    height: int
    width: int
    tile_height: int
    tile_width: int
    corners: tuple[tuple[int, int], ...]
    overlap: int

    @classmethod
    def cover(cls, height: int, width: int, tile: int, overlap: int) -> Grid:
        if not 0 <= overlap < tile:
            raise ValueError(f"the tile overlap ({overlap}) must be at least 0 and less than the tile ({tile})")
        tile_height, tile_width = tile_side(height, tile, overlap), tile_side(width, tile, overlap)
        corners = tuple(
            (y, x) for y in starts(height, tile_height, overlap) for x in starts(width, tile_width, overlap)
        )
        return cls(height, width, tile_height, tile_width, corners, overlap)

    def cut(self, plane: np.ndarray) -> list[np.ndarray]:
        """The tiles of ``plane`` (H×W), in the order of ``corners``; views, not copies."""
        return [plane[y : y + self.tile_height, x : x + self.tile_width] for y, x in self.corners]

    def cut_planes(self, planes: np.ndarray | list[np.ndarray]) -> list[np.ndarray]:
        """The tiles of every plane of ``planes`` (C×H×W, or a list of H×W), plane after plane."""
        return [tile for plane in planes for tile in self.cut(plane)]

    def stitch(self, tiles: list[np.ndarray], out: np.ndarray | None = None) -> np.ndarray:
        """The H×W plane from the model's output ``tiles`` (in the order of ``corners``), blended across overlaps;
        written into ``out`` when given."""
        total = np.zeros((self.height, self.width), dtype=np.float32) if out is None else out
        if len(tiles) == 1:
            total[...] = tiles[0]
            return total
        total[...] = 0.0
        weights = np.zeros((self.height, self.width), dtype=np.float32)
        for (y, x), tile in zip(self.corners, tiles, strict=True):
            weight = np.outer(
                self._ramp(self.tile_height, y == 0, y + self.tile_height == self.height),
                self._ramp(self.tile_width, x == 0, x + self.tile_width == self.width),
            )
            total[y : y + self.tile_height, x : x + self.tile_width] += weight * tile
            weights[y : y + self.tile_height, x : x + self.tile_width] += weight
        total /= weights
        return total

    def stitch_planes(self, tiles: list[np.ndarray], planes: int) -> np.ndarray:
        """C×H×W from the output ``tiles`` of ``planes`` planes cut alike, plane after plane (each stitched
        into its place: no copy of them all)."""
        per_plane = len(self.corners)
        stitched = np.empty((planes, self.height, self.width), dtype=np.float32)
        for i in range(planes):
            self.stitch(tiles[i * per_plane : (i + 1) * per_plane], out=stitched[i])
        return stitched

    def _ramp(self, length: int, at_start_border: bool, at_end_border: bool) -> np.ndarray:
        """1 in the middle, falling linearly over ``overlap`` pixels towards an edge that is inside the image."""
        ramp = np.ones(length, dtype=np.float32)
        fade = (np.arange(self.overlap, dtype=np.float32) + 1.0) / (self.overlap + 1.0)
        if self.overlap and not at_start_border:
            ramp[: self.overlap] = fade
        if self.overlap and not at_end_border:
            ramp[length - self.overlap :] = np.minimum(ramp[length - self.overlap :], fade[::-1])
        return ramp

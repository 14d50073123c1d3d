"""How a plane is cut into tiles: every pixel covered, neighbours overlapping, as little forward as tiles allow."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from service.tiles import Grid, starts, tile_side

TILE, OVERLAP = 512, 32
LENGTHS = [1, 7, 511, 512, 513, 600, 991, 992, 993, 1024, 1500, 2048, 4000]


@pytest.mark.parametrize("length", LENGTHS)
def test_tiles_cover_a_side_with_the_overlap_and_as_few_tiles_as_the_tile_size_allows(length: int) -> None:
    side = tile_side(length, TILE, OVERLAP)
    positions = starts(length, side, OVERLAP)
    assert side <= TILE and positions[0] == 0 and positions[-1] + side == length
    assert all(b - a <= side - OVERLAP for a, b in itertools.pairwise(positions))  # overlap kept
    assert len(positions) == len(starts(length, min(TILE, length), OVERLAP))  # no more tiles than full ones take


def test_a_side_just_past_a_tile_is_cut_into_tiles_no_longer_than_it_needs() -> None:
    """A 1024-pixel side: three tiles of 368 (1,104 pixels of forward), not three of 512 (1,536)."""
    assert tile_side(1024, TILE, OVERLAP) == 368
    assert tile_side(2048, TILE, OVERLAP) == 440
    assert tile_side(992, TILE, OVERLAP) == TILE  # two full tiles fit exactly


def test_stitched_tiles_give_back_the_plane() -> None:
    plane = np.random.default_rng(0).random((1100, 700), dtype=np.float32)
    grid = Grid.cover(*plane.shape, TILE, OVERLAP)
    assert {tile.shape for tile in grid.cut(plane)} == {(grid.tile_height, grid.tile_width)} == {(392, 368)}
    np.testing.assert_allclose(grid.stitch(grid.cut(plane)), plane, rtol=1e-6)

"""Associate new DiaSources with known DiaObjects (`AssociationTask`).

Each source/object pair has a combined positional covariance: the sum of the
two sides' covariances (``raErr``, ``decErr``, ``ra_dec_Cov``; a default
error where a row has none), each axis floored.  A pair is a candidate when
its separation is within ``radius_nsigma`` times the combined sigma along
the covariance's longest axis, bounded below by ``min_radius_arcsec`` and
above by ``maxDistArcSeconds``: a young object (error about the source's)
is searched farther out than a well measured one, and a precise source next
to a precise object is not pulled in from far away.  Candidates are found
with a KD-tree on unit vectors.  Each candidate pair gets a cost: the
Gaussian negative log-likelihood of the offset when positional errors are
available, otherwise the angular distance.  The
assignment is a global one-to-one minimum-cost bipartite matching in which
every source also has a private "no match" option, solved with
`scipy.sparse.csgraph.min_weight_full_bipartite_matching`.
Unlike a greedy nearest-neighbour pass, this gets crowded pairs right: two
sources 0.6″ apart next to two objects are not both pulled to the nearer one.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import pandas as pd
from pydantic import Field
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import min_weight_full_bipartite_matching
from scipy.spatial import cKDTree

from tasks.association.skygeom import (
    chord_for_arcsec,
    chord_to_arcsec,
    tangent_offsets_arcsec,
    unit_vectors,
)
from tasks.core.base import Struct, Task, TaskConfig, TaskError

__all__ = ["AssociationConfig", "AssociationTask", "AssociationError", "CandidatePairs"]

_ARCSEC_PER_DEG = 3600.0
# Added to every edge weight: the sparse solver needs non-zero weights, and a
# constant on every edge of a full matching does not change which one is best.
_WEIGHT_OFFSET = 1.0
# Neighbours asked of the k-d tree per source before falling back to a ball query.
_K_NEAREST = 4


class AssociationError(TaskError):
    """Raised for association inputs that cannot be used (missing columns, bad ids)."""


class AssociationConfig(TaskConfig):
    """Configuration of `AssociationTask`."""

    maxDistArcSeconds: float = Field(
        2.0,
        gt=0.0,
        description="Cap of the candidate radius: no DiaSource-DiaObject pair farther apart "
        "can match (arcsec).",
    )
    radius_nsigma: float = Field(
        5.0,
        gt=0.0,
        description="Candidate radius of a pair in units of its combined positional sigma "
        "(the longest axis of the summed source and object covariances).",
    )
    min_radius_arcsec: float = Field(
        0.5,
        gt=0.0,
        description="Floor of the candidate radius (arcsec), against underestimated errors; "
        "larger values are capped at maxDistArcSeconds.",
    )
    score_method: Literal["auto", "nll", "distance"] = Field(
        "auto",
        description=(
            "Pair cost: 'nll' Gaussian negative log-likelihood from raErr/decErr, 'distance' "
            "angular distance, 'auto' nll when both tables carry raErr and decErr columns."
        ),
    )
    position_error_floor_arcsec: float = Field(
        0.05, gt=0.0, description="Floor of the combined per-axis positional sigma (arcsec)."
    )
    default_position_error_arcsec: float = Field(
        0.2,
        gt=0.0,
        description="Per-axis sigma used where a row's raErr/decErr is missing (arcsec).",
    )


class CandidatePairs(Struct):
    """Candidate source/object pairs.

    ``src``, ``obj`` (row positions), ``dist`` (arcsec), ``radius`` (the
    pair's candidate radius, arcsec) and the combined covariance in the
    tangent plane of the object (arcsec², east/north): ``cxx``, ``cyy``, ``cxy``.
    """


class AssociationTask(Task):
    """Match DiaSources one-to-one to DiaObjects by global minimum cost."""

    ConfigClass = AssociationConfig
    _DefaultName = "association"
    config: AssociationConfig

    def run(self, diaSources: pd.DataFrame, diaObjects: pd.DataFrame) -> Struct:
        """Associate new DiaSources with existing DiaObjects.

        Parameters
        ----------
        diaSources : `pandas.DataFrame`
            New DiaSources; needs ``diaSourceId``, ``ra``, ``dec`` (degrees) and
            optionally ``raErr``, ``decErr`` (degrees, uncertainty of the coordinate).
        diaObjects : `pandas.DataFrame`
            Known DiaObjects; needs ``diaObjectId``, ``ra``, ``dec`` and
            optionally ``raErr``, ``decErr``.

        Returns
        -------
        result : `tasks.core.base.Struct`
            ``matchedDiaSources`` (input rows with ``diaObjectId`` set),
            ``unAssocDiaSources`` (input rows without a match, ``diaObjectId`` NA),
            ``droppedDiaSources`` (rows with non-finite coordinates),
            ``matches`` (``diaSourceId``, ``diaObjectId``, ``distance`` arcsec, ``score``),
            ``nUpdatedDiaObjects``, ``nUnassociatedDiaObjects``.
        """
        with self.timer("association"):
            sources, dropped = self._clean(diaSources, "diaSourceId", "DiaSources")
            objects, dropped_objects = self._clean(diaObjects, "diaObjectId", "DiaObjects")
            src_idx, obj_idx, dist, score = self.associate_sources(objects, sources)

        object_ids = np.zeros(len(sources), dtype=np.int64)
        object_ids[src_idx] = objects["diaObjectId"].to_numpy(dtype=np.int64)[obj_idx]
        is_matched = np.zeros(len(sources), dtype=bool)
        is_matched[src_idx] = True
        matched = sources.iloc[np.flatnonzero(is_matched)].copy()
        matched["diaObjectId"] = pd.array(object_ids[is_matched], dtype="Int64")
        unmatched = sources.iloc[np.flatnonzero(~is_matched)].copy()
        unmatched["diaObjectId"] = pd.array([pd.NA] * len(unmatched), dtype="Int64")
        matches = pd.DataFrame(
            {
                "diaSourceId": sources["diaSourceId"].to_numpy()[src_idx],
                "diaObjectId": object_ids[src_idx],
                "distance": dist,
                "score": score,
            }
        )
        n_updated = len(src_idx)
        self.metadata["numUpdatedDiaObjects"] = n_updated
        self.metadata["numUnassociatedDiaObjects"] = len(objects) - n_updated
        self.metadata["numDroppedDiaSources"] = len(dropped)
        self.log.info(
            "%d DiaSources matched, %d unassociated, %d dropped; %d DiaObjects not detected",
            n_updated,
            len(unmatched),
            len(dropped),
            len(objects) - n_updated,
        )
        return Struct(
            matchedDiaSources=matched,
            unAssocDiaSources=unmatched,
            droppedDiaSources=dropped,
            droppedDiaObjects=dropped_objects,
            matches=matches,
            nUpdatedDiaObjects=n_updated,
            nUnassociatedDiaObjects=len(objects) - n_updated,
        )

    # -- the algorithm -------------------------------------------------
    def associate_sources(
        self, dia_objects: pd.DataFrame, dia_sources: pd.DataFrame
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Return the optimal one-to-one matches between clean tables.

        Parameters
        ----------
        dia_objects, dia_sources : `pandas.DataFrame`
            Tables with finite ``ra``, ``dec``.

        Returns
        -------
        src_idx, obj_idx : `numpy.ndarray`
            Row positions of matched pairs (sorted by source).
        distance, score : `numpy.ndarray`
            Angular distance (arcsec) and cost of each match.
        """
        pairs = self.find_candidates(dia_objects, dia_sources)
        cost, no_match = self.score(dia_objects, dia_sources, pairs)
        keep = self.match(pairs, cost, no_match, len(dia_sources))
        order = np.argsort(pairs.src[keep], kind="stable")
        keep = keep[order]
        return pairs.src[keep], pairs.obj[keep], pairs.dist[keep], cost[keep]

    def find_candidates(
        self, dia_objects: pd.DataFrame, dia_sources: pd.DataFrame
    ) -> CandidatePairs:
        """Find every object within its pair's candidate radius of each source.

        The KD-tree is searched out to the largest radius any pair can have
        (the cap, or less when every error is small); the pairs beyond
        their own radius are then dropped.
        """
        src_cov = self._covariances(dia_sources)
        obj_cov = self._covariances(dia_objects)
        empty = np.empty(0, dtype=np.intp)
        if len(dia_objects) == 0 or len(dia_sources) == 0:
            return self._pairs(empty, empty, np.empty(0), src_cov, obj_cov)
        # largest combined sigma of any pair bounds the search radius
        widest = np.sqrt(_max_eigen(*src_cov).max() + _max_eigen(*obj_cov).max())
        search = self._radius(widest)
        obj_vec = unit_vectors(dia_objects["ra"].to_numpy(), dia_objects["dec"].to_numpy())
        src_vec = unit_vectors(dia_sources["ra"].to_numpy(), dia_sources["dec"].to_numpy())
        chord = chord_for_arcsec(search)
        # an unbalanced, non-compact tree builds twice as fast and queries as fast here
        tree = cKDTree(obj_vec, balanced_tree=False, compact_nodes=False)
        # A k-nearest query returns arrays (no per-source Python lists); the
        # few sources whose k neighbours are all inside the radius may have
        # more candidates and are completed with a ball query.
        k = min(_K_NEAREST, len(obj_vec))
        chords, idx = tree.query(src_vec, k=k, distance_upper_bound=chord)
        chords, idx = chords.reshape(len(src_vec), k), idx.reshape(len(src_vec), k)
        hit = np.isfinite(chords)
        full = hit[:, -1].copy() if k == _K_NEAREST else np.zeros(len(src_vec), dtype=bool)
        hit[full] = False
        src = np.nonzero(hit)[0]
        obj = idx[hit].astype(np.intp)
        if full.any():
            crowded = np.flatnonzero(full)
            found = tree.query_ball_point(src_vec[crowded], chord, return_sorted=False)
            counts = np.fromiter(map(len, found), dtype=np.intp, count=len(found))
            src = np.concatenate((src, np.repeat(crowded, counts)))
            obj = np.concatenate((obj, np.concatenate(found).astype(np.intp)))
        if len(src) == 0:
            return self._pairs(empty, empty, np.empty(0), src_cov, obj_cov)
        dist = chord_to_arcsec(np.linalg.norm(src_vec[src] - obj_vec[obj], axis=1))
        return self._pairs(src, obj, dist, src_cov, obj_cov)

    def _pairs(
        self,
        src: np.ndarray,
        obj: np.ndarray,
        dist: np.ndarray,
        src_cov: tuple[np.ndarray, np.ndarray, np.ndarray],
        obj_cov: tuple[np.ndarray, np.ndarray, np.ndarray],
    ) -> CandidatePairs:
        """Compute combined covariances and radii of pairs; keep those within their radius."""
        floor2 = self.config.position_error_floor_arcsec**2
        cxx = np.maximum(src_cov[0][src] + obj_cov[0][obj], floor2)
        cyy = np.maximum(src_cov[1][src] + obj_cov[1][obj], floor2)
        # keep the matrix positive definite after the floor
        limit = 0.999 * np.sqrt(cxx * cyy)
        cxy = np.clip(src_cov[2][src] + obj_cov[2][obj], -limit, limit)
        radius = self._radius(np.sqrt(_max_eigen(cxx, cyy, cxy)))
        keep = dist <= radius
        return CandidatePairs(
            src=src[keep],
            obj=obj[keep],
            dist=dist[keep],
            radius=radius[keep],
            cxx=cxx[keep],
            cyy=cyy[keep],
            cxy=cxy[keep],
        )

    def _radius(self, sigma: np.ndarray | float) -> np.ndarray:
        """Candidate radius (arcsec) for a combined sigma: k sigma, floored and capped."""
        cap = self.config.maxDistArcSeconds
        floor = min(self.config.min_radius_arcsec, cap)
        return np.clip(self.config.radius_nsigma * np.asarray(sigma, dtype=np.float64), floor, cap)

    def score(
        self, dia_objects: pd.DataFrame, dia_sources: pd.DataFrame, pairs: CandidatePairs
    ) -> tuple[np.ndarray, np.ndarray]:
        """Return the cost of each candidate pair and each source's no-match cost.

        The no-match cost of a source is the largest cost any of its
        candidates could have at its pair's radius (the offset along the
        covariance's shortest axis), so on its own every candidate beats "no match"; a
        candidate is left unmatched only when giving its object to another
        source lowers the total cost.
        """
        n_src = len(dia_sources)
        if not self._use_nll(dia_objects, dia_sources):
            return pairs.dist / self.config.maxDistArcSeconds, np.ones(n_src)
        floor2 = self.config.position_error_floor_arcsec**2
        ra_s = dia_sources["ra"].to_numpy()[pairs.src]
        dec_s = dia_sources["dec"].to_numpy()[pairs.src]
        ra_o = dia_objects["ra"].to_numpy()[pairs.obj]
        dec_o = dia_objects["dec"].to_numpy()[pairs.obj]
        dx, dy = tangent_offsets_arcsec(ra_s, dec_s, ra_o, dec_o)
        cxx, cyy, cxy = pairs.cxx, pairs.cyy, pairs.cxy
        det = cxx * cyy - cxy**2
        log_norm = 0.5 * np.log(det / floor2**2)  # >= 0: each axis is floored
        cost = 0.5 * (cyy * dx**2 - 2.0 * cxy * dx * dy + cxx * dy**2) / det + log_norm
        # the largest cost at distance r: the offset along the shortest axis
        at_radius = 0.5 * pairs.radius**2 / _min_eigen(cxx, cyy, cxy) + log_norm
        no_match = np.zeros(n_src)
        np.maximum.at(no_match, pairs.src, at_radius)
        return cost, no_match

    def match(
        self, pairs: CandidatePairs, cost: np.ndarray, no_match: np.ndarray, n_sources: int
    ) -> np.ndarray:
        """Solve the one-to-one assignment; return the indices of the chosen pairs.

        Pairs whose source and object have no other candidate cannot be in
        conflict and are taken directly; the rest go to the sparse solver
        with one private "no match" column per source.
        """
        if len(pairs.src) == 0:
            return np.empty(0, dtype=np.intp)
        n_per_src = np.bincount(pairs.src, minlength=n_sources)
        n_per_obj = np.bincount(pairs.obj)
        simple = (n_per_src[pairs.src] == 1) & (n_per_obj[pairs.obj] == 1)
        chosen = [np.flatnonzero(simple)]
        hard = np.flatnonzero(~simple)
        if len(hard):
            rows, src_of_row = _compact(pairs.src[hard])
            cols, _ = _compact(pairs.obj[hard])
            n_rows, n_cols = len(src_of_row), cols.max() + 1
            graph = csr_matrix(
                (
                    np.concatenate((cost[hard], no_match[src_of_row])) + _WEIGHT_OFFSET,
                    (
                        np.concatenate((rows, np.arange(n_rows))),
                        np.concatenate((cols, n_cols + np.arange(n_rows))),
                    ),
                ),
                shape=(n_rows, n_cols + n_rows),
            )
            row_ind, col_ind = min_weight_full_bipartite_matching(graph)
            real = col_ind < n_cols
            # map the chosen (row, col) back to positions in `hard`
            key = rows.astype(np.int64) * n_cols + cols
            wanted = row_ind[real].astype(np.int64) * n_cols + col_ind[real]
            sorter = np.argsort(key)
            chosen.append(hard[sorter[np.searchsorted(key, wanted, sorter=sorter)]])
        return np.concatenate(chosen)

    # -- helpers -------------------------------------------------------
    def _use_nll(self, dia_objects: pd.DataFrame, dia_sources: pd.DataFrame) -> bool:
        if self.config.score_method != "auto":
            return self.config.score_method == "nll"
        needed = {"raErr", "decErr"}
        return needed <= set(dia_objects.columns) and needed <= set(dia_sources.columns)

    def _covariances(self, table: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per-row positional covariance on the sky (east, north; arcsec²), with the fallback.

        ``raErr`` is the error of the ra coordinate (so ``raErr cos(dec)`` on
        the sky) and ``ra_dec_Cov`` the ra/dec covariance (degrees²).  Rows
        without a finite positive ``raErr`` and ``decErr`` take
        ``default_position_error_arcsec`` on both axes and no covariance.
        """
        n = len(table)
        cosd = np.cos(np.radians(table["dec"].to_numpy(dtype=np.float64))) if n else np.ones(0)
        ra_err = _column(table, "raErr") * _ARCSEC_PER_DEG * cosd
        dec_err = _column(table, "decErr") * _ARCSEC_PER_DEG
        cov = _column(table, "ra_dec_Cov") * _ARCSEC_PER_DEG**2 * cosd
        ok = np.isfinite(ra_err) & (ra_err > 0) & np.isfinite(dec_err) & (dec_err > 0)
        default2 = self.config.default_position_error_arcsec**2
        cxx = np.where(ok, ra_err**2, default2)
        cyy = np.where(ok, dec_err**2, default2)
        cxy = np.where(ok & np.isfinite(cov), cov, 0.0)
        return cxx, cyy, cxy

    def _clean(
        self, table: pd.DataFrame, id_column: str, what: str
    ) -> tuple[pd.DataFrame, pd.DataFrame]:
        """Validate a table; split off rows whose coordinates are not finite."""
        missing = {id_column, "ra", "dec"} - set(table.columns)
        if missing:
            raise AssociationError(f"{what} lack required columns: {sorted(missing)}")
        try:
            ra = pd.to_numeric(table["ra"]).to_numpy(dtype=np.float64, na_value=np.nan)
            dec = pd.to_numeric(table["dec"]).to_numpy(dtype=np.float64, na_value=np.nan)
        except (TypeError, ValueError) as exc:
            raise AssociationError(f"{what} ra/dec are not numeric: {exc}") from exc
        ids = table[id_column]
        if ids.isna().any():
            raise AssociationError(f"{what} have missing {id_column} values")
        if ids.duplicated().any():
            dups = ids[ids.duplicated()].unique()[:10].tolist()
            raise AssociationError(f"{what} have duplicate {id_column} values, e.g. {dups}")
        good = np.isfinite(ra) & np.isfinite(dec) & (np.abs(dec) <= 90.0)
        if not good.all():
            self.log.warning(
                "dropping %d %s with non-finite or invalid coordinates (ids %s)",
                int((~good).sum()),
                what,
                ids[~good].head(10).tolist(),
            )
        if good.all() and table["ra"].dtype == np.float64 and table["dec"].dtype == np.float64:
            return table, table.iloc[:0]  # the common case: no copy of a large table
        clean = table.loc[good].copy()
        clean["ra"] = ra[good]
        clean["dec"] = dec[good]
        return clean, table.loc[~good]


def _column(table: pd.DataFrame, column: str) -> np.ndarray:
    """Return a numeric column as float64 (NaN where missing or not a number)."""
    if column not in table.columns:
        return np.full(len(table), np.nan)
    return pd.to_numeric(table[column], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)


def _max_eigen(cxx: np.ndarray, cyy: np.ndarray, cxy: np.ndarray) -> np.ndarray:
    """Largest eigenvalue of symmetric 2 x 2 matrices."""
    return 0.5 * (cxx + cyy) + np.sqrt(0.25 * (cxx - cyy) ** 2 + cxy**2)


def _min_eigen(cxx: np.ndarray, cyy: np.ndarray, cxy: np.ndarray) -> np.ndarray:
    """Smallest eigenvalue of symmetric 2 x 2 matrices."""
    return 0.5 * (cxx + cyy) - np.sqrt(0.25 * (cxx - cyy) ** 2 + cxy**2)


def _compact(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return dense codes ``0..k-1`` of ``values`` and the distinct values."""
    uniques, codes = np.unique(values, return_inverse=True)
    return codes, uniques

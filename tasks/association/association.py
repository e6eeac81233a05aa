"""Associate new DiaSources with known DiaObjects (`AssociationTask`).

Candidates are every DiaObject within ``maxDistArcSeconds`` of a DiaSource,
found with a KD-tree on unit vectors.  Each candidate pair gets a cost: the
Gaussian negative log-likelihood of the offset when positional errors are
available (per-axis variance = sum of the two sides' variances, floored),
otherwise the angular distance.  The assignment is a global one-to-one
minimum-cost bipartite matching in which every source also has a private
"no match" option, solved with `scipy.sparse.csgraph.min_weight_full_bipartite_matching`.
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
        1.0, gt=0.0, description="Largest DiaSource-DiaObject distance that can match (arcsec)."
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
    """Candidate source/object pairs: ``src``, ``obj`` (row positions), ``dist`` (arcsec)."""


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
        """Find every object within ``maxDistArcSeconds`` of each source."""
        empty = np.empty(0, dtype=np.intp)
        if len(dia_objects) == 0 or len(dia_sources) == 0:
            return CandidatePairs(src=empty, obj=empty, dist=np.empty(0))
        obj_vec = unit_vectors(dia_objects["ra"].to_numpy(), dia_objects["dec"].to_numpy())
        src_vec = unit_vectors(dia_sources["ra"].to_numpy(), dia_sources["dec"].to_numpy())
        chord = chord_for_arcsec(self.config.maxDistArcSeconds)
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
            return CandidatePairs(src=empty, obj=empty, dist=np.empty(0))
        dist = chord_to_arcsec(np.linalg.norm(src_vec[src] - obj_vec[obj], axis=1))
        return CandidatePairs(src=src, obj=obj, dist=dist)

    def score(
        self, dia_objects: pd.DataFrame, dia_sources: pd.DataFrame, pairs: CandidatePairs
    ) -> tuple[np.ndarray, np.ndarray]:
        """Return the cost of each candidate pair and each source's no-match cost.

        The no-match cost of a source is the largest cost any of its
        candidates would have at the search radius, so on its own every
        candidate beats "no match"; a candidate is left unmatched only when
        giving its object to another source lowers the total cost.
        """
        n_src = len(dia_sources)
        use_nll = self._use_nll(dia_objects, dia_sources)
        radius = self.config.maxDistArcSeconds
        if not use_nll:
            cost = pairs.dist / radius
            return cost, np.ones(n_src)
        floor2 = self.config.position_error_floor_arcsec**2
        sx2 = self._sigma2(dia_sources, "raErr", pairs.src, dia_sources["dec"]) + self._sigma2(
            dia_objects, "raErr", pairs.obj, dia_objects["dec"]
        )
        sy2 = self._sigma2(dia_sources, "decErr", pairs.src) + self._sigma2(
            dia_objects, "decErr", pairs.obj
        )
        sx2 = np.maximum(sx2, floor2)
        sy2 = np.maximum(sy2, floor2)
        ra_s = dia_sources["ra"].to_numpy()[pairs.src]
        dec_s = dia_sources["dec"].to_numpy()[pairs.src]
        ra_o = dia_objects["ra"].to_numpy()[pairs.obj]
        dec_o = dia_objects["dec"].to_numpy()[pairs.obj]
        dx, dy = tangent_offsets_arcsec(ra_s, dec_s, ra_o, dec_o)
        log_norm = 0.5 * np.log(sx2 * sy2 / floor2**2)  # >= 0 because of the floor
        cost = 0.5 * (dx**2 / sx2 + dy**2 / sy2) + log_norm
        at_radius = 0.5 * radius**2 / np.minimum(sx2, sy2) + log_norm
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

    def _sigma2(
        self,
        table: pd.DataFrame,
        column: str,
        index: np.ndarray,
        dec: pd.Series | None = None,
    ) -> np.ndarray:
        """Per-pair positional variance (arcsec²) of one side, with the fallback."""
        if column in table.columns:
            err = pd.to_numeric(table[column], errors="coerce").to_numpy(dtype=np.float64)[index]
            err = err * _ARCSEC_PER_DEG
            if dec is not None:  # raErr is an error of the ra coordinate
                err = err * np.cos(np.radians(dec.to_numpy(dtype=np.float64)[index]))
        else:
            err = np.full(len(index), np.nan)
        err = np.where(np.isfinite(err) & (err > 0), err, self.config.default_position_error_arcsec)
        return err**2

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


def _compact(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return dense codes ``0..k-1`` of ``values`` and the distinct values."""
    uniques, codes = np.unique(values, return_inverse=True)
    return codes, uniques

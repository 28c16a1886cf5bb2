"""Catalog values that several tests use as they are."""

from __future__ import annotations

from gateway.types import Operation

REPOSITORIES_LIST = Operation(
    id="git.Repositories_List",
    area="git",
    host="main",
    method="GET",
    template="/{organization}/{project}/_apis/git/repositories",
    scopes=("vso.code",),
)

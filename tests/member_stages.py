"""Plugin stages whose `members` declarations are wrong, for the plan checks of tests/test_members.py."""

from __future__ import annotations

from dataprep.stage import Stage


class StrayMember(Stage):
    """Declares a member for a column it never writes."""

    name = "stray_member"
    writes = ("embedding",)
    members = {"latent": "latent.npy"}


class TwinMembers(Stage):
    """Writes two columns into the same member, so one would overwrite the other."""

    name = "twin_members"
    writes = ("emb_a", "emb_b")
    members = {"emb_a": "emb.npy", "emb_b": "emb.npy"}

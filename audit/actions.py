"""The registry of audit actions: the one place that says what an entry's `action` means.

Names are stable dotted ids (Sentry's `member.invite` style): exports, filters and anything
that reads the trail later depend on them, so rename nothing — add a new name instead.
`audit.services.record()` refuses any action that is not listed here.
"""

from __future__ import annotations

from typing import Final

ACTIONS: Final[dict[str, str]] = {
    # authentication (platform level: no workspace)
    "auth.login": "Signed in.",
    "auth.login_failed": "A sign-in attempt failed (wrong password, unknown email, locked out).",
    "auth.logout": "Signed out.",
    "auth.password_change": (
        "A user's password was changed (on the password page, by a reset link, in the "
        "admin or by a command); every other session of the user ends."
    ),
    # users and workspaces (platform staff, in the admin)
    "user.create": "Platform staff created a user.",
    "user.update": "Platform staff changed a user's profile or permissions.",
    "user.deactivate": "Platform staff deactivated a user (every session and socket ends).",
    "user.activate": "Platform staff re-activated a user.",
    "user.delete": "Platform staff deleted a user (the trail keeps their id and email).",
    "workspace.create": "Created a workspace.",
    "workspace.update": "Changed a workspace's name, slug or HTTP allow-list.",
    "workspace.delete": "Platform staff deleted a workspace.",
    # members, invitations, tokens
    "member.invite": "Invited an email address to the workspace with a role.",
    "member.invite_revoke": "Revoked a pending invitation.",
    "member.join": "Accepted an invitation and joined the workspace.",
    "member.add": "Platform staff added a member to the workspace directly (admin).",
    "member.role_change": "Changed a member's role.",
    "member.remove": "Removed a member (or left the workspace).",
    "token.create": "Created an API token (with its flows, expiry and rate limit when it has them).",
    "token.revoke": "Revoked an API token.",
    # provider credentials (secrets never appear: only `has_api_key`)
    "credential.create": "Created a provider credential.",
    "credential.update": "Changed a provider credential.",
    "credential.delete": "Deleted a provider credential.",
    "credential.test": "Tested a provider credential's connection.",
    # the component whitelist
    "whitelist.platform_change": "Platform staff enabled or disabled a component everywhere.",
    "whitelist.workspace_change": "A workspace admin narrowed or restored a component.",
    # flows
    "flow.create": "Created a flow (also by duplicating one).",
    "flow.rename": "Renamed a flow or changed its description.",
    "flow.delete": "Deleted a flow (soft delete: its runs and versions stay).",
    "flow.version_save": "Saved a new immutable version of a flow's graph.",
    "flow.draft_discard": (
        "Discarded a flow's working draft (the editor went back to the latest version); "
        "autosaves of the draft are not recorded."
    ),
    "flow.export": "Exported a flow as a file (name, description and graph).",
    "flow.publish": (
        "Published a version of a flow (what the run API and the OpenAI-compatible endpoint "
        "run); publishing an older version is a rollback."
    ),
    "flow.unpublish": "Took a flow's published version down (callers then get 409 / 404).",
    # conversations (a thread of runs with one flow; creating one and its turns are runs)
    "conversation.rename": "Renamed a conversation.",
    "conversation.delete": (
        "Deleted a conversation and its memory (its turns' runs and their logs stay)."
    ),
    # embeds (a published flow as a chat on a website)
    "embed.create": "Embedded a flow on websites (allowed origins, limits): a public chat.",
    "embed.update": "Changed an embed (allowed origins, limits, appearance, on or off).",
    "embed.delete": "Deleted an embed: its token stops working (its conversations' runs stay).",
    # documents (the docs.corpus collections)
    "document.create": "Added a document to a collection.",
    "document.delete": "Deleted a document.",
    # knowledge bases (knowledge/)
    "knowledge_base.create": "Created a knowledge base.",
    "knowledge_base.update": (
        "Renamed a knowledge base or changed its chunking or embedding settings (a settings "
        "change re-indexes its documents)."
    ),
    "knowledge_base.reindex": "Asked for every document of a knowledge base to be indexed again.",
    "knowledge_base.delete": "Deleted a knowledge base with its documents and chunks.",
    "knowledge_document.upload": "Uploaded a document to a knowledge base.",
    "knowledge_document.delete": "Deleted a document of a knowledge base (and its chunks).",
    "knowledge_document.retry": "Queued a failed document of a knowledge base again.",
    # runs
    "run.start": "Started a run.",
    "run.rerun": "Started a re-run of an earlier run (same version, same inputs).",
    "run.cancel": "Asked a run to stop.",
    "run.approve": "Approved a run's approval step (the value as asked, or edited), with a comment.",
    "run.reject": "Rejected a run's approval step, with a comment.",
    "run.approval_timeout": "A run's approval step timed out and took its timeout decision.",
    "run.replay": "Replayed a finished run from its stored log.",
    "run.watch": "Watched another member's run live.",
    "run.export": "Exported a run (graph, inputs, events, outputs).",
    # usage (platform admins, in the Django admin)
    "model_price.create": "Platform staff set the price of a model's tokens.",
    "model_price.update": "Platform staff changed the price of a model's tokens.",
    "model_price.delete": "Platform staff removed the price of a model's tokens.",
    "budget.set": "Platform staff set or changed a workspace's or an API key's monthly budget.",
    "budget.remove": "Platform staff removed a workspace's or an API key's monthly budget.",
    # budgets (workspace admins, under Settings and in the API)
    "usage.budget_set": (
        "A workspace admin set, changed or removed (both limits empty) the workspace's "
        "monthly token and cost budget (Settings → Usage, or PUT usage/budget)."
    ),
    "usage.key_budget_set": (
        "A workspace admin set, changed or removed an API key's own monthly token and cost "
        "budget (Settings → API tokens)."
    ),
    # exports of the trail and of admin data
    "audit.export": "Exported the workspace audit trail (JSONL or CSV).",
    "admin.export": "Platform staff exported data from the admin.",
    # the trail itself
    "audit.head_rebuilt": (
        "The chain head row was missing and was rebuilt from the newest entry: entries "
        "after `last_seq` may have been deleted with it (verify_audit reports this)."
    ),
    # failed authorisation
    "access.denied": (
        "Refused: a non-member asked for a workspace, or a member asked for an id that is "
        "not in their workspace (answered 404)."
    ),
}


def is_registered(action: str) -> bool:
    return action in ACTIONS


def describe(action: str) -> str:
    return ACTIONS.get(action, action)


def choices() -> list[tuple[str, str]]:
    """(name, name) pairs for filter forms, in registry order."""
    return [(name, name) for name in ACTIONS]

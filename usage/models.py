"""Token usage and its cost: one row per model-calling node of a run, rolled up per day.

`UsageRecord` is the exact ledger (one row per run and node, so a second recording of the
same run adds nothing); `UsageDay` is its roll-up per day x workspace x flow x user x model,
incremented only by records that were new. Cost is computed when a record is written, from
the `ModelPrice` of that moment, and stored: a later price change does not rewrite history.
"""

from __future__ import annotations

from decimal import Decimal

from django.conf import settings
from django.core.validators import MinValueValidator
from django.db import models

from accounts.models import Workspace

# Cost columns: 20 digits, 8 after the point (a token of a cheap model costs 1e-8 or so).


class ModelPrice(models.Model):
    """The price of a model's tokens (per million), set by platform admins."""

    model = models.CharField(max_length=200, unique=True, help_text="The model name a node uses.")
    input_per_million = models.DecimalField(
        max_digits=12, decimal_places=6, validators=[MinValueValidator(Decimal(0))]
    )
    output_per_million = models.DecimalField(
        max_digits=12, decimal_places=6, validators=[MinValueValidator(Decimal(0))]
    )
    currency = models.CharField(max_length=3, default="USD")
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["model"]

    def __str__(self) -> str:
        return self.model

    def cost(self, *, input_tokens: int, output_tokens: int) -> Decimal:
        return (
            Decimal(input_tokens) * self.input_per_million
            + Decimal(output_tokens) * self.output_per_million
        ) / Decimal(1_000_000)


class UsageRecord(models.Model):
    """What one node of one run used, as the provider reported it (its `node_finished`)."""

    run = models.ForeignKey("runs.Run", on_delete=models.CASCADE, related_name="usage_records")
    node_id = models.CharField(max_length=100)
    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE)
    model = models.CharField(max_length=200, blank=True)
    input_tokens = models.PositiveBigIntegerField()
    output_tokens = models.PositiveBigIntegerField()
    cost = models.DecimalField(
        null=True, blank=True, max_digits=20, decimal_places=8
    )  # None: no price known
    currency = models.CharField(max_length=3, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["run", "node_id"], name="usagerecord_run_node")
        ]

    def __str__(self) -> str:
        return f"{self.run_id}/{self.node_id}"


class UsageDay(models.Model):
    """The day's totals of one workspace x flow x user x API key x model (UTC days)."""

    day = models.DateField()
    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="usage_days")
    # Kept when the flow or user is deleted: the workspace's spend does not shrink.
    flow = models.ForeignKey("flows.Flow", on_delete=models.SET_NULL, null=True, blank=True)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True
    )
    # The API key the runs were started with; empty: from a page or the WebSocket.
    api_token = models.ForeignKey(
        "accounts.ApiToken", on_delete=models.SET_NULL, null=True, blank=True
    )
    model = models.CharField(max_length=200, blank=True)
    input_tokens = models.PositiveBigIntegerField(default=0)
    output_tokens = models.PositiveBigIntegerField(default=0)
    cost = models.DecimalField(default=Decimal(0), max_digits=20, decimal_places=8)
    calls = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["-day"]
        constraints = [
            models.UniqueConstraint(
                fields=["day", "workspace", "flow", "user", "api_token", "model"],
                name="usageday_key",
                nulls_distinct=False,
            )
        ]

    def __str__(self) -> str:
        return f"{self.day} {self.workspace_id} {self.model}"


class WorkspaceBudget(models.Model):
    """A workspace's monthly budget (UTC calendar month): tokens, cost, or both; a run is
    refused once either is spent and stopped mid-run when it crosses one."""

    workspace = models.OneToOneField(Workspace, on_delete=models.CASCADE, related_name="budget")
    monthly_tokens = models.PositiveBigIntegerField(
        null=True, blank=True, help_text="Input plus output tokens per month; empty: no limit."
    )
    monthly_cost = models.DecimalField(
        max_digits=14,
        decimal_places=4,
        null=True,
        blank=True,
        validators=[MinValueValidator(Decimal(0))],
        help_text="Cost per month, in the price table's currency; empty: no limit.",
    )
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"budget of {self.workspace_id}"


class KeyBudget(models.Model):
    """An API key's own monthly budget (as a workspace's, counting only its runs)."""

    api_token = models.OneToOneField(
        "accounts.ApiToken", on_delete=models.CASCADE, related_name="budget"
    )
    monthly_tokens = models.PositiveBigIntegerField(
        null=True, blank=True, help_text="Input plus output tokens per month; empty: no limit."
    )
    monthly_cost = models.DecimalField(
        max_digits=14,
        decimal_places=4,
        null=True,
        blank=True,
        validators=[MinValueValidator(Decimal(0))],
        help_text="Cost per month, in the price table's currency; empty: no limit.",
    )
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"budget of key {self.api_token_id}"

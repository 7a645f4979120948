"""Small spec texts shared by the spec tests."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"

VALID = """\
apiVersion: fleet-reconciler/v1
kind: Fleet
metadata:
  name: demo
plans:
  baseline:
    rid: 52
    vcpu: 1
    ram_gb: 2
    disk_gb: 50
    monthly_price: 9.99
  big:
    rid: 54
    vcpu: 4
    ram_gb: 8
    disk_gb: 150
    monthly_price: 39.99
regions:
  seattle:
    location_id: 12
    plan: baseline
    nodes: 2
  dallas:
    location_id: 13
    plan: baseline
    nodes: {min: 1, max: 3}
ip_pools:
  shared:
    size: 3
    regions: [seattle, dallas]
"""

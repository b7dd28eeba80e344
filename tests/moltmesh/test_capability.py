import pytest

from moltmesh.capability import estimate_tier, local_tier

GIB = 2**30


@pytest.mark.parametrize(
    ("cores", "memory", "accelerated", "tier"),
    [
        (1, 1 * GIB, False, "light"),
        (2, 8 * GIB, False, "light"),
        (4, 1 * GIB, False, "light"),
        (4, 8 * GIB, False, "standard"),
        (15, 64 * GIB, False, "standard"),
        (16, 64 * GIB, False, "heavy"),
        (2, 4 * GIB, True, "heavy"),
        (None, 8 * GIB, False, "light"),
    ],
)
def test_tier_table(cores, memory, accelerated, tier):
    assert estimate_tier(cores, memory, accelerated) == tier


def test_cpu_and_remote_providers_are_not_accelerators():
    cpu_only = local_tier(["AzureExecutionProvider", "CPUExecutionProvider"])
    with_gpu = local_tier(["CUDAExecutionProvider", "CPUExecutionProvider"])
    assert with_gpu == "heavy"
    assert cpu_only in ("light", "standard", "heavy")
    assert cpu_only == local_tier(["CPUExecutionProvider"])

import pytest
import torch.distributed as dist

from lyrics.data.sharding import distributed_rank_world, worker_id_count


def test_arguments_without_a_process_group():
    assert distributed_rank_world() == (0, 1)
    assert distributed_rank_world(2, 4) == (2, 4)
    with pytest.raises(ValueError, match="0 <= rank < world_size"):
        distributed_rank_world(4, 4)
    assert worker_id_count() == (0, 1)


def test_process_group_wins_and_contradictions_are_errors(tmp_path):
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        assert distributed_rank_world() == (0, 1)
        assert distributed_rank_world(0, 1) == (0, 1)
        with pytest.raises(ValueError, match="disagree"):
            distributed_rank_world(1, 2)
    finally:
        dist.destroy_process_group()

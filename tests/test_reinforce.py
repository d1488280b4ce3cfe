"""REINFORCE over one categorical policy per location."""

import pytest

from stv.methods.reinforce import reinforce


@pytest.mark.parametrize("good_arm", [0, 1])
def test_reinforce_moves_towards_the_rewarded_arm(good_arm):
    result = reinforce(
        lambda step, choices: (choices[:, 0] == good_arm).float(),
        locations=1,
        arms=2,
        steps=40,
        samples=16,
        progress=False,
    )
    assert result.probabilities[0, good_arm] > 0.9 and result.choice[0] == good_arm
    assert result.reward_curve[-1] > result.reward_curve[0]


def test_reinforce_locations_are_independent():
    # location 0 rewards arm 2, location 1 rewards arm 0
    reward = lambda step, c: (c[:, 0] == 2).float() + (c[:, 1] == 0).float()  # noqa: E731
    result = reinforce(reward, locations=2, arms=3, steps=60, samples=16, progress=False)
    assert result.choice.tolist() == [2, 0]

import rat_langchain
import rat_langchain.sim

EXPECTED = {
    "ClientPool",
    "ConfigError",
    "PoolClosedError",
    "RatConfig",
    "RatError",
    "Simulator",
    "SimulatorProcess",
    "SimulatorThread",
}


def test_public_api_is_deliberate() -> None:
    assert set(rat_langchain.__all__) == EXPECTED
    for name in EXPECTED:
        assert getattr(rat_langchain, name) is not None


def test_sim_api() -> None:
    assert {"Simulator", "SimConfig", "SimStats", "Reply"} <= set(rat_langchain.sim.__all__)

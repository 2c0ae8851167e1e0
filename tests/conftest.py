"""Suite-wide pytest configuration: the lab's fixtures (`lab`, `vip_probe`) for every test."""

pytest_plugins = ["tests.lab.fixtures"]

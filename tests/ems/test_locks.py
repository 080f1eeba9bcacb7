"""One controller per device: a second daemon on the same unit address is refused, naming the first."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from ems.cli import main
from ems.config import load_site
from ems.devices import claim_devices
from ems.errors import ConfigError
from ems.locks import release

TCP = "adapter: {kind: modbus_tcp, host: 127.0.0.1, port: 1502, unit_id: 3}"


@pytest.fixture
def tcp_site(configs_dir, tmp_path):
    """The home site with its charger on a Modbus TCP address (nothing listens there)."""
    text = (configs_dir / "home-v2h.yaml").read_text().replace("adapter: {kind: simulator}", TCP, 1)
    assert TCP in text
    text = text.replace("tariff: tariffs/", f"tariff: {configs_dir}/tariffs/").replace("csv: data/", f"csv: {configs_dir}/data/")
    path = tmp_path / "site.yaml"
    path.write_text(text)
    return path


def test_a_second_claim_on_the_same_unit_names_the_holder(tcp_site):
    cfg = load_site(tcp_site)
    fds = claim_devices(cfg)
    try:
        assert len(fds) == 1
        with pytest.raises(ConfigError) as err:
            claim_devices(cfg)
        text = str(err.value)
        assert f"pid {os.getpid()}" in text and "127.0.0.1:1502 unit 3" in text and "chargers[0].adapter" in text
    finally:
        release(fds)
    release(claim_devices(cfg))   # free again once released


def test_ems_run_is_refused_while_another_process_drives_the_unit(tcp_site, tmp_path, capsys):
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        from ems.config import load_site
        from ems.devices import claim_devices
        claim_devices(load_site({str(tcp_site)!r}))
        print("held", flush=True)
        time.sleep(60)
        """)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        db = tmp_path / "ems.sqlite"
        assert main(["run", "--config", str(tcp_site), "--database", str(db), "--until", "2030-01-01T00:00:00+09:00"]) == 2
        err = capsys.readouterr().err
        assert f"pid {holder.pid}" in err and "one controller per device" in err and "Traceback" not in err
        assert not db.exists()          # refused before the database was touched
    finally:
        holder.kill()
        holder.wait()

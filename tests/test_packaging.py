"""The project as a user installs it: a built wheel (not editable) in a fresh environment."""

import subprocess
import sys
import sysconfig
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(*args, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=600,
                          **kwargs)


def test_wheel_installs_every_package_and_the_command(tmp_path):
    built = run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                "--wheel-dir", tmp_path / "dist", ROOT)
    assert built.returncode == 0, built.stderr[-3000:]
    (wheel,) = (tmp_path / "dist").glob("agentic_mac-*.whl")
    venv = tmp_path / "venv"
    assert run(sys.executable, "-m", "venv", "--without-pip", venv).returncode == 0
    python, command = venv / "bin" / "python", venv / "bin" / "agentic-mac"
    installed = run(sys.executable, "-m", "pip", "--python", python, "install", "--no-deps",
                    "--no-index", wheel)
    assert installed.returncode == 0, installed.stderr[-3000:]
    # The dependencies come from this environment; the project itself only from the wheel (a
    # path appended by a .pth file is searched after the venv's own site-packages).
    site = Path(run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])",
                    cwd=tmp_path).stdout.strip())
    (site / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    probe = run(python, "-c", "import trainers.marl, trainers.cli.main, recipes, textgame, "
                "grammars; from trainers.cli.args import CONFIG_DIR; "
                "print(trainers.marl.__file__); print(sorted(p.name for p in "
                "CONFIG_DIR.glob('*.yaml')))", cwd=tmp_path)
    assert probe.returncode == 0, probe.stderr[-3000:]
    marl_file, configs = probe.stdout.splitlines()
    assert Path(marl_file).is_relative_to(venv)
    assert "'tiny_cpu.yaml'" in configs and "'mappo_cpu.yaml'" in configs
    sim = run(command, "simulate", "--episodes", "2", "--n_envs", "2", "--ues", "3",
              "--disable_tqdm", cwd=tmp_path)
    assert sim.returncode == 0, sim.stderr[-3000:]
    assert sim.stdout.startswith("| leader | followers | ues | rbgs |")
    assert "| max_weight | dictator | 3 | 4 |" in sim.stdout


def test_the_floor_file_pins_every_lower_bound_of_pyproject():
    """.ci/run installs .ci/floors.txt in a second environment: it must pin exactly the lower
    bounds pyproject.toml declares (dependencies and every extra)."""
    import re
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    declared = [*project["dependencies"], *(r for name in sorted(extras) for r in extras[name])]
    lower = {}
    for requirement in declared:
        if requirement.startswith("agentic-mac"):
            continue
        name, floor = re.match(r"([A-Za-z0-9_.-]+)>=([^,;\s]+)", requirement).groups()
        lower[name] = floor
    lines = [line for line in (ROOT / ".ci" / "floors.txt").read_text().splitlines()
             if line and not line.startswith("#")]
    pinned = dict(line.split("==") for line in lines)
    assert pinned == lower
    assert "--constraint .ci/floors.txt" in (ROOT / ".ci" / "run").read_text()

"""``DistillConfig``: every knob of the distilled real-time student (paper App. C-C)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from textgame.config import check_int_at_least, check_positive, check_real_in, scenario_field
from textgame.config import fail_field as _fail_field
from trainers.runs.run_dir import (
    DISABLE_TQDM_HELP,
    OVERWRITE_HELP,
    REPORT_TO_HELP,
    RESUME_HELP,
    report_to_option,
    resume_option,
)
from trainers.specs import parse_spec

OWNER = "DistillConfig"
RUNTIMES = ("torch", "onnx")
BASELINES = ("none", "ppo")
STUDENT_DECODINGS = ("auto", "greedy", "sample")


def _help(text: str, **kwargs) -> Any:
    return field(metadata={"help": text}, **kwargs)


def _fail(name: str, value: Any, allowed: str) -> None:
    _fail_field(OWNER, name, value, allowed)


def _sizes(name: str, value: Any) -> list[int]:
    if (not isinstance(value, (list, tuple)) or len(value) == 0
            or any(isinstance(x, bool) or not isinstance(x, int) or x < 1 for x in value)):
        _fail(name, value, "a non-empty list of integers >= 1")
    return list(value)


@dataclass
class DistillConfig:
    """Configuration of :func:`trainers.student.distill.distill`.

    Behaviour cloning on teacher rollouts, then DAgger rounds on the student's own state
    distribution (a beta-mixture: each env's TTI is executed by the teacher with probability
    ``dagger_beta ** round``, else by the student; every visited state is labelled by the
    teacher), all data aggregated.

    Parameters that control the teacher and the cells:
        teacher, teacher_greedy, scenario, ue_counts, base_model, device
    Parameters that control the student networks and how they act:
        history_len, leader_hidden, follower_hidden, student_decoding
    Parameters that control the data (rollouts) and the DAgger schedule:
        n_envs, bc_episodes, dagger_rounds, dagger_episodes, dagger_beta
    Parameters that control the optimisation:
        epochs_per_round, minibatch_size, learning_rate, weight_decay, max_grad_norm,
        nobody_weight
    Parameters that control the undistilled baseline (Fig. 14):
        baseline, baseline_seconds
    Parameters that control the run:
        seed, output_dir, resume_from_checkpoint, overwrite_output_dir, save_total_limit,
        report_to, disable_tqdm, eval_episodes, export_onnx, num_threads
    """

    # ------------------------------------------------------------------- teacher and cells
    teacher: str | None = _help(
        "Policy spec of the teacher, as in evaluate: 'LEADER/FOLLOWER' (textgame heuristics, "
        "e.g. max_weight/dictator), 'marl:DIR' (MAPPO/G-MAC) or 'llm:DIR_OR_REPO' (Stackelberg "
        "PPO adapters).", default=None)
    teacher_greedy: bool = _help(
        "Label with the teacher's most likely action (MARL heads' modes; LLM at temperature "
        "0.3) instead of a sample.", default=True)
    scenario: dict | str | None = _help(
        "The cell (design §2) as a mapping or a JSON string with sections cell, traffic, channel, "
        "reward; None = design defaults. Its N and K fix the student's.", default=None)
    ue_counts: list[int] | None = _help(
        "Support of D(I) for the rollouts (uniform); None = the sizes the teacher was trained "
        "on (MARL/LLM: read from its config; heuristics: the scenario's D(I)) together with "
        "eval_ues, the sizes the student is meant to serve.", default=None)
    base_model: str | None = _help(
        "Base model of an LLM teacher (default: the one its adapters name).", default=None)
    device: str | None = _help("torch device of an LLM or MARL teacher (the student trains "
                               "on the CPU).", default=None)

    # --------------------------------------------------------------------------- networks
    history_len: int = _help("H: TTIs in the students' history stacks.", default=2)
    leader_hidden: int = _help("Width of the leader student's per-UE embedding.", default=64)
    follower_hidden: list[int] = _help("Hidden widths of the follower student's MLP (ReLU).",
                                       default_factory=lambda: [64, 64])
    student_decoding: Literal["auto", "greedy", "sample"] = _help(
        "How the student acts in the DAgger rollouts, the retention table and, saved in "
        "student_config.json, by default once loaded: 'greedy' takes each head's mode; "
        "'sample' draws the DCM from the leader's Plackett-Luce distribution, each bitmap bit "
        "and the UCM from theirs (behaviour cloning learns pi(a|s): the mode of a teacher "
        "whose UEs send with probability < 0.5 never sends). 'auto': 'sample' when the "
        "teacher samples ('llm:', whose PAG sampling has no temperature 0; 'marl:' with "
        "teacher_greedy false), else 'greedy' (heuristics: pass 'sample' for the random ones, "
        "e.g. s_aloha). Sampling runs in PyTorch (eval_runtime 'torch').", default="auto")

    # ------------------------------------------------------------------- data and DAgger
    n_envs: int = _help("B: environments in lock step per rollout batch.", default=32)
    bc_episodes: int = _help("Episodes of teacher rollouts for behaviour cloning (round 0).",
                             default=256)
    dagger_rounds: int = _help("DAgger rounds after behaviour cloning (0 = BC only).",
                               default=4)
    dagger_episodes: int = _help("Episodes per DAgger round.", default=128)
    dagger_beta: float = _help(
        "beta: in DAgger round r (1-based) the teacher executes an env's TTI with probability "
        "beta ** r (Ross et al.'s decaying mixture); the student otherwise.", default=0.5)

    # ----------------------------------------------------------------------- optimisation
    epochs_per_round: int = _help(
        "Passes over the aggregated data after each round (ceil(leader decisions / "
        "minibatch_size) steps each). Raise it when a costly teacher gives few decisions: an "
        "LLM teacher's 480 leader decisions are 2 steps a pass (recipes/REPRODUCE.md, Fig. 14).",
        default=3)
    minibatch_size: int = _help("Decisions (leader TTIs; UE decisions) per minibatch.",
                                default=256)
    learning_rate: float = _help("Adam learning rate (cosine decay over all rounds).",
                                 default=3e-3)
    weight_decay: float = _help("AdamW weight decay.", default=0.0)
    max_grad_norm: float = _help("Gradient clipping per network.", default=1.0)
    nobody_weight: float = _help(
        "Weight of the RBGs the teacher left to nobody in the leader's behaviour-cloning loss "
        "(the class weight of owner 0; every UE's is 1). Below 1 it counters labels that are "
        "mostly 'nobody' (a G-MAC teacher at I = 2..5), where the student otherwise leaves "
        "more RBGs idle than its teacher (recipes/REPRODUCE.md, Fig. 14); 1 = the plain "
        "likelihood.", default=1.0)

    # ------------------------------------------------------------------ undistilled baseline
    baseline: Literal["none", "ppo"] = _help(
        "'ppo': after distilling, train the same student architecture from scratch by PPO "
        "on the same D(I) (trainers.student.ppo_baseline) into output_dir/baseline-ppo, and "
        "add its columns to the retention table.", default="none")
    baseline_seconds: float | None = _help(
        "Wall time of the PPO baseline in seconds; None = the distillation's own wall time.",
        default=None)

    # -------------------------------------------------------------------------------- run
    seed: int = _help("Seed of initialisation, rollouts and minibatch order.", default=0)
    output_dir: str = _help("Run directory: checkpoints, metrics, final student.",
                            default="runs/student")
    resume_from_checkpoint: str | None = _help(RESUME_HELP, default=None)
    overwrite_output_dir: bool = _help(OVERWRITE_HELP, default=False)
    save_total_limit: int = _help("Checkpoints kept (oldest deleted first).", default=2)
    report_to: list[str] = _help(REPORT_TO_HELP, default_factory=list)
    disable_tqdm: bool = _help(DISABLE_TQDM_HELP, default=False)
    eval_episodes: int = _help("Episodes of the final student-vs-teacher evaluation per I.",
                               default=64)
    eval_ues: list[int] = _help("UE counts of the final evaluation (retention table).",
                                default_factory=lambda: list(range(2, 11)))
    export_onnx: bool = _help("Write leader.onnx and follower.onnx next to the final weights.",
                              default=True)
    eval_runtime: Literal["torch", "onnx"] = _help(
        "Runtime of the student in the final evaluation.", default="torch")
    num_threads: int | None = _help(
        "Torch CPU threads; None = every core this process may use (1 is fastest for these "
        "small networks).", default=1)

    def __post_init__(self) -> None:
        if not isinstance(self.teacher, str) or not self.teacher:
            _fail("teacher", self.teacher, "a policy spec: 'LEADER/FOLLOWER', 'marl:DIR' or "
                  "'llm:DIR_OR_REPO'")
        self.scenario = scenario_field(OWNER, self.scenario)
        if self.ue_counts is not None:
            self.ue_counts = _sizes("ue_counts", self.ue_counts)
        self.follower_hidden = _sizes("follower_hidden", self.follower_hidden)
        self.eval_ues = _sizes("eval_ues", self.eval_ues)
        for name in ("history_len", "leader_hidden", "n_envs", "bc_episodes",
                     "dagger_episodes", "epochs_per_round", "minibatch_size",
                     "save_total_limit", "eval_episodes"):
            check_int_at_least(OWNER, name, getattr(self, name), 1)
        if self.num_threads is not None:
            check_int_at_least(OWNER, "num_threads", self.num_threads, 1)
        for name in ("dagger_rounds", "seed"):
            check_int_at_least(OWNER, name, getattr(self, name), 0)
        check_real_in(OWNER, "dagger_beta", self.dagger_beta, 0.0, 1.0)
        check_real_in(OWNER, "weight_decay", self.weight_decay, 0.0, 1.0)
        for name in ("learning_rate", "max_grad_norm", "nobody_weight"):
            check_positive(OWNER, name, getattr(self, name))
        if self.baseline not in BASELINES:
            _fail("baseline", self.baseline, f"one of {list(BASELINES)}")
        if self.baseline_seconds is not None:
            check_positive(OWNER, "baseline_seconds", self.baseline_seconds)
        if self.eval_runtime not in RUNTIMES:
            _fail("eval_runtime", self.eval_runtime, f"one of {list(RUNTIMES)}")
        if self.eval_runtime == "onnx" and not self.export_onnx:
            _fail("eval_runtime", self.eval_runtime, "'torch' when export_onnx is false")
        if self.student_decoding not in STUDENT_DECODINGS:
            _fail("student_decoding", self.student_decoding, f"one of {list(STUDENT_DECODINGS)}")
        if self.eval_runtime == "onnx" and self.decoding == "sample":
            _fail("eval_runtime", self.eval_runtime, "'torch' when the student samples "
                  f"(student_decoding {self.student_decoding!r}; sampling runs in PyTorch)")
        if not self.output_dir:
            _fail("output_dir", self.output_dir, "a directory path")
        self.resume_from_checkpoint = resume_option(OWNER, self.resume_from_checkpoint,
                                                    self.overwrite_output_dir)
        self.report_to = report_to_option(OWNER, self.report_to)
        if not isinstance(self.disable_tqdm, bool):
            _fail("disable_tqdm", self.disable_tqdm, "True or False")

    @property
    def decoding(self) -> str:
        """The student's decoding: ``student_decoding`` with 'auto' resolved by the teacher."""
        if self.student_decoding != "auto":
            return self.student_decoding
        try:
            kind = parse_spec(self.teacher).kind
        except ValueError:  # build_teacher reports the bad spec
            return "greedy"
        stochastic = kind == "llm" or (kind == "marl" and not self.teacher_greedy)
        return "sample" if stochastic else "greedy"

    @property
    def total_rounds(self) -> int:
        """Round 0 (behaviour cloning) and the DAgger rounds."""
        return 1 + self.dagger_rounds

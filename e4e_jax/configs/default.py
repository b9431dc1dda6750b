"""The default training config: every field a run reads, with the official values.

Official option names (omertov/encoder4editing options/train_options.py) are kept for the fields that
exist there; defaults are the official ones and the command line of the official README
(`--start_from_latent_avg --use_w_pool --w_discriminator_lambda 0.1 --progressive_start 20000
--val_interval 10000 --batch_size 8`), i.e. the paper's appendix weights: λ_l2 1, λ_lpips 0.8,
λ_sim 0.1 (faces, ArcFace ID loss) / 0.5 (other domains, MoCo), λ_adv 0.1, λ_d-reg 2e-4, λ_edit 1.
The per-domain configs beside this file (ffhq, ffhq_w, cars, horse, church, cats, tiny; ReStyle:
ffhq_restyle_e4e, ffhq_restyle_psp, tiny_restyle) import it and override what differs, as flax's
examples/imagenet/configs do.

Usage: e4e-jax train --config configs/default.py --workdir DIR [--config.KEY=VALUE ...]
The rules every config must pass (value ranges, choices, ablation switches) are in
e4e_jax/training/config_rules.py.
"""
import ml_collections
from ml_collections import config_dict


def get_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.dataset_type = "ffhq_encode"        # official --dataset_type (domain label, selects nothing by itself)

    # ------------------------------------------------------------------ data
    c.data = ml_collections.ConfigDict()
    c.data.source = "folder"               # 'folder' (train_dir/test_dir) or 'synthetic' (samples of G)
    c.data.train_dir = ""
    c.data.test_dir = ""
    c.data.image_size = (256, 256)         # (H, W) encoder input; cars (192, 256)
    c.data.random_flip = True              # official train transform: RandomHorizontalFlip(0.5)
    c.data.loader = "auto"                 # 'auto' (tfds if tensorflow imports, else numpy), 'tfds', 'numpy'
    c.data.num_workers = 8                 # decoding threads of the numpy loader
    c.data.prefetch = 2                    # batches prepared ahead on the devices
    c.data.synthetic_truncation = 1.0      # synthetic source: ψ of the sampled codes
    c.data.num_eval_samples = 64           # synthetic source: held-out samples for validation

    # ------------------------------------------------------------------ networks
    c.generator = ml_collections.ConfigDict()
    c.generator.bundle = ""                # 'stylegan2' (or 'e4e') bundle: the frozen, pretrained G
    # Instead of a bundle: a StyleGAN2Config dict (+ 'seed') for a fixed-seed random generator (toy runs,
    # benchmarks).
    c.generator.random_init = config_dict.placeholder(dict)
    # 'activation' (modulate activations, shared-weight conv) or 'grouped' (per-sample weights as a grouped
    # conv). Same maths; 'grouped' cannot run on a batch sharded over several devices (XLA's partitioner
    # rejects the batch-folded feature_group_count), so training uses 'activation'.
    c.generator.modulation = "activation"
    # 'auto': sub-pixel on accelerators (no transposed-conv gradients, which XLA handles badly on GPU),
    # the official order on CPU; or 'transpose' / 'subpixel' (same maths, see e4e_jax.models.layers).
    c.generator.upsample = "auto"
    c.encoder = ml_collections.ConfigDict()
    c.encoder.arch = "e4e"                 # key of e4e_jax.training.networks.ENCODERS
    c.encoder.mode = "e4e"                 # 'e4e' (w + Δ_i), 'psp' (ablation A) or 'w' (one w, see ffhq_w);
                                           # ReStyle: 'restyle_e4e', 'restyle_psp' (see ffhq_restyle_e4e)
    c.encoder.kwargs = ml_collections.ConfigDict()  # extra keyword arguments of the encoder module
    c.encoder.init_bundle = ""             # an 'e4e' bundle to start from (official --checkpoint_path)
    c.encoder.backbone_init_bundle = ""    # an 'arcface' IR-SE50 bundle for the backbone (official init)
    c.start_from_latent_avg = True
    c.n_iters_per_batch = 5                # ReStyle encoders only: refinement iterations per batch (official)

    # ------------------------------------------------------------------ losses (official names)
    c.l2_lambda = 1.0
    c.lpips_lambda = 0.8
    c.lpips_type = "alex"
    c.lpips_bundle = ""                    # 'lpips' bundle
    c.id_lambda = 0.1                      # λ_sim; the network is chosen by `similarity`
    c.similarity = "id"                    # 'id' (ArcFace, faces) or 'moco' (other domains)
    c.id_bundle = ""                       # 'arcface' bundle (similarity='id')
    c.moco_bundle = ""                     # 'moco' bundle (similarity='moco')
    c.w_discriminator_lambda = 0.1         # λ_adv
    c.delta_norm_lambda = 2e-4             # λ_d-reg
    c.edit_lambda = 1.0                    # λ_edit (paper Eq. 7)
    c.use_delta_reg = True
    c.output_size = (256, 256)             # pSp.face_pool
    c.crop_rows = config_dict.placeholder(tuple)  # cars: (32, 224)
    c.random_loss_networks = False         # LPIPS/ArcFace/MoCo with random weights: toy runs and benchmarks only
    c.train_noise = "random"               # official randomize_noise=True while training

    # ------------------------------------------------------------------ discriminator
    c.w_discriminator_lr = 2e-5
    c.r1 = 10.0
    c.d_reg_every = 16
    c.use_w_pool = True
    c.w_pool_size = 50

    # ------------------------------------------------------------------ optimisation and schedule
    c.optim_name = "ranger"
    c.learning_rate = 1e-4
    c.batch_size = 8
    c.test_batch_size = 4
    c.max_steps = 500_000
    c.use_progressive = True
    c.progressive_start = 20_000
    c.progressive_step_every = 2_000
    c.compute_dtype = "float32"            # or 'bfloat16' (params stay float32)

    # ------------------------------------------------------------------ logging / checkpoints
    c.board_interval = 50
    c.image_interval = 100
    c.val_interval = 10_000
    c.save_interval = 10_000
    c.max_val_batches = -1                 # -1: the whole test set
    c.keep_checkpoints = 3
    c.export_bundle = True                 # write an 'e4e' bundle to WORKDIR/model at the end

    # ------------------------------------------------------------------ multi-host (README "Training on a
    # TPU pod / several hosts"; e4e_jax.runtime.distributed.initialize). Unset fields fall back to the environment
    # (JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID); nothing set: one process.
    c.distributed = ml_collections.ConfigDict()
    c.distributed.coordinator_address = ""  # HOST:PORT of process 0
    c.distributed.num_processes = config_dict.placeholder(int)
    c.distributed.process_id = config_dict.placeholder(int)
    c.distributed.auto = False              # let JAX detect the cluster itself (Cloud TPU pods, SLURM, MPI)
    c.ablation = ""
    return c

"""Device meshes and data parallelism (see shared/design/training.md)."""

from jaxemb.parallel._blocked import blocked_info_nce as blocked_info_nce
from jaxemb.parallel._distributed import initialize as initialize
from jaxemb.parallel._grad_cache import grad_cache as grad_cache
from jaxemb.parallel._mesh import batch_sharding as batch_sharding
from jaxemb.parallel._mesh import local_batch_size as local_batch_size
from jaxemb.parallel._mesh import make_mesh as make_mesh
from jaxemb.parallel._mesh import replicated as replicated
from jaxemb.parallel._mesh import shard_batch as shard_batch
from jaxemb.parallel._momentum import KeyQueue as KeyQueue
from jaxemb.parallel._momentum import ema_update as ema_update
from jaxemb.parallel._momentum import mochi_negatives as mochi_negatives
from jaxemb.parallel._momentum import moco_info_nce as moco_info_nce
from jaxemb.parallel._ring import ring_info_nce as ring_info_nce
from jaxemb.parallel._ring import ring_sigmoid_loss as ring_sigmoid_loss

__all__ = ["make_mesh", "batch_sharding", "replicated", "shard_batch", "local_batch_size"]
__all__ += ["ring_info_nce", "ring_sigmoid_loss"]
__all__ += ["ema_update", "KeyQueue", "moco_info_nce", "mochi_negatives"]
__all__ += ["initialize"]
__all__ += ["grad_cache", "blocked_info_nce"]

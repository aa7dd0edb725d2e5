"""Process-wide resources (HTTP session, database, services): opened once, closed once."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import aiohttp
from PIL import Image

from app.core.background import Background
from app.core.costs import Prices
from app.core.inputs import InputResolver
from app.core.jobs import JobResumer
from app.core.leases import LeaseKeeper
from app.core.links import KEY_NAME, LinkSigner
from app.core.metrics import Metrics
from app.core.service import GenerationService
from app.core.uploads import Uploads
from app.pixazo.client import PixazoClient
from app.settings import Settings
from app.storage.blobs import BlobStore, LocalBlobStore
from app.storage.credentials import ContentCredentials
from app.storage.database import RecordStore, open_store, redacted
from app.storage.images import ImageStore
from app.storage.rows import Instance

logger = logging.getLogger(__name__)


@dataclass
class AppState:
    settings: Settings
    http: aiohttp.ClientSession
    store: RecordStore
    service: GenerationService
    instance: Instance
    inputs: InputResolver
    jobs: JobResumer | None = None
    background: Background | None = None
    uploads: Uploads | None = None


def http_session(settings: Settings) -> aiohttp.ClientSession:
    """The one outgoing HTTP session of the process.

    The pool must not be the bottleneck: aiohttp's default of 100 connections would queue a crowd
    behind it, so it is sized from the concurrency cap (generation calls plus image downloads).
    """
    connector = aiohttp.TCPConnector(limit=max(100, settings.max_concurrency * 2 + 16), limit_per_host=0,
                                     ttl_dns_cache=300)
    timeout = aiohttp.ClientTimeout(total=settings.timeout_s, sock_connect=settings.connect_timeout_s)
    # trust_env stays off: a proxy from the environment must not see our key by surprise.
    return aiohttp.ClientSession(connector=connector, timeout=timeout, raise_for_status=False)


@asynccontextmanager
async def open_blob_store(settings: Settings) -> AsyncIterator[BlobStore]:
    """The image store PIXAZO_IMAGE_STORE names: an S3-compatible bucket (s3://BUCKET/PREFIX), or a
    directory (that setting as a path, else PIXAZO_IMAGE_DIR)."""
    target = settings.image_store
    if target is not None and target.startswith("s3://"):
        from app.storage.s3 import S3BlobStore  # the AWS SDK (8 MB of memory) only for a bucket

        async with S3BlobStore.open(target, settings) as blobs:
            logger.info("images: %r (endpoint %s)", blobs, settings.s3_endpoint_url or "AWS")
            yield blobs
        return
    yield await asyncio.to_thread(LocalBlobStore, Path(target) if target else settings.image_dir)


@asynccontextmanager
async def open_state(settings: Settings, *, link_base: str | None = None) -> AsyncIterator[AppState]:
    """`link_base`: where signed links point when there is no PIXAZO_PUBLIC_URL (the HTTP demo's own
    loopback address, which its simulator can reach); None: PIXAZO_PUBLIC_URL or no links."""
    # Checked once already by create_app (a bad file stops the command with one line); read again here
    # so that every server built from these settings (tests build some without create_app) prices alike.
    prices = await asyncio.to_thread(Prices.load, settings)
    # The same for C2PA signing (PIXAZO_C2PA_CERT_FILE): None when off; read and tried once, here.
    credentials = await asyncio.to_thread(ContentCredentials.from_settings, settings)
    if credentials is not None:
        logger.info("C2PA Content Credentials on: every kept image is signed (%s)", credentials.algorithm)
    # Image writes (fsync) and thumbnails run in worker threads: give them enough that a crowd of
    # calls finishing together does not queue behind a handful of fsyncs.
    asyncio.get_running_loop().set_default_executor(
        ThreadPoolExecutor(max_workers=max(32, settings.max_concurrency // 4), thread_name_prefix="pixazo-io"))
    # Pillow's decompression-bomb guard at our own largest cap, the editing tools' (it is process-wide;
    # so is this server; libvips' renditions read it too). The header check refuses larger images before
    # either library sees them; this covers any other path.
    Image.MAX_IMAGE_PIXELS = max(settings.max_image_pixels, settings.max_edit_pixels)
    # Decoding is CPU work, and libvips (as Pillow) releases the GIL while it decodes and resizes: one
    # thread per core keeps the cores busy without holding more decoded images than that in memory.
    pool = ThreadPoolExecutor(max_workers=settings.image_workers, thread_name_prefix="pixazo-image")
    instance = Instance()
    store = await open_store(settings.database, instance, pool_size=settings.db_pool_size)
    logger.info("database: %s (%s), instance %s", store.engine, redacted(settings.database), instance.id)
    images: ImageStore | None = None
    leases = LeaseKeeper(store, settings.lease_s)
    try:
        # Rows left PENDING become INTERRUPTED only once their owner is gone: a second instance on
        # the same database (started by mistake, or a replica) leaves the first one's calls alone.
        await leases.start()
        async with AsyncExitStack() as stack:
            http = await stack.enter_async_context(http_session(settings))
            client = PixazoClient(http, settings.base_url, settings.api_key, http.timeout)
            blobs = await stack.enter_async_context(open_blob_store(settings))
            images = ImageStore(blobs, http, settings.allowed_image_hosts, max_bytes=settings.max_image_bytes,
                                max_pixels=settings.max_image_pixels, max_downloads=settings.max_downloads,
                                pool=pool, credentials=credentials)
            metrics = Metrics()
            images.on_stage = metrics.stage
            service = GenerationService(settings, store, client, images, metrics, prices)
            # Queue jobs whose owner is gone are resumed, from now (a restart's own jobs) and at every
            # lease tick. Stopped before the session and the image store close (the stack unwinds
            # first), and before the lease is released: their rows stay PENDING for the next instance.
            jobs = JobResumer(service, settings.resume_concurrency)
            stack.push_async_callback(jobs.stop)
            leases.jobs = jobs
            await leases.tick()
            links = LinkSigner(await store.server_key(KEY_NAME), settings.signed_link_ttl_s,
                               settings.public_url or link_base)
            # Generations launched by calls; stopped first as the stack unwinds (after the drain).
            background = Background(service, jobs)
            stack.push_async_callback(background.stop)
            uploads = Uploads(settings, service)
            yield AppState(settings, http, store, service, instance, InputResolver(settings, service, links, uploads),
                           jobs, background, uploads)
    finally:
        await leases.stop()
        if images is not None:
            await images.aclose()
        pool.shutdown(wait=False, cancel_futures=True)
        await store.close()

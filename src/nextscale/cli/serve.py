"""`nextscale serve`: a local web page to generate and edit images with a model, watching each scale appear."""

from __future__ import annotations

from ..errors import NextscaleError
from .common import add_device_arg, add_model_args, at_least, check_model_args, load_models, resolve_device


def register(sub) -> None:
    p = sub.add_parser(
        "serve",
        help="a local web page (and JSON API) to generate and edit images",
        description="Serves a page where you pick a class and watch the image appear scale by "
        "scale, or drag a box on an image to repaint it; the same JSON API serves "
        "scripts. The page starts with the model given here and offers every built-in "
        "model in a picker (each loaded when first picked); one generation at a time "
        "(the rest wait in line). Needs the web extra: pip install 'nextscale[web]'.",
    )
    add_model_args(p)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (the default: this machine only)")
    p.add_argument("--port", type=int, default=7860, help="port to listen on (0: any free port)")
    p.add_argument("--max-images", type=int, default=16, help="the most images one request may ask for")
    add_device_arg(p)
    p.set_defaults(func=run, no_reuse_memory=True)  # a long-lived server gives memory back between requests


def run(args) -> None:
    try:
        import starlette  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError:
        raise NextscaleError("serve needs the web extra: pip install 'nextscale[web]'") from None
    if not 0 <= args.port <= 65535:
        raise NextscaleError(f"--port must be in [0, 65535], got {args.port}")
    at_least(args.max_images, 1, "--max-images")
    if not (args.model or args.vae or args.var):
        args.model = "digits"
    check_model_args(args)
    from ..web import Models, Session, serve
    from ..web.server import bind

    sock = bind(args.host, args.port)  # a taken port fails now, not after the model loads
    try:
        device = resolve_device(args.device)
        vae, var = load_models(args, device)
        model_args = ["--model", args.model] if args.model else ["--vae", args.vae, "--var", args.var]
        model_args += ["--any-tokenizer"] if args.any_tokenizer else []  # the printed commands pair them alike
        title = args.model or f"{args.vae} + {args.var}"
        device_arg = None if args.device == "auto" else args.device
        first = Session(vae, var, model_args, title, device_arg, max_images=args.max_images)
        serve(Models.with_builtins(first), sock=sock)
    finally:
        sock.close()

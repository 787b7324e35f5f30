"""python -m kubesim serve --cluster FILE --port N --kubeconfig OUT [--tls | --tls-dir DIR] [--state FILE] [--token T]

Runs the simulated cluster as a process until interrupted, after writing a kubeconfig for it.
Faults are injected through the control endpoint (POST /kubesim/faults, /kubesim/drop-watches,
/kubesim/expire, /kubesim/nodes/NAME/ready)."""
from __future__ import annotations

import argparse
import signal
import threading

from .sim import DEFAULT_TOKEN, KubeSim


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m kubesim", description="A simulated GPU cluster speaking the Kubernetes API.")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the API server")
    serve.add_argument("--cluster", help="cluster definition (YAML); default: the demo cluster")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=0, help="0 picks a free port")
    serve.add_argument("--kubeconfig", help="write a kubeconfig for the server here")
    serve.add_argument("--token", action="append", help=f"accepted bearer token (default {DEFAULT_TOKEN})")
    serve.add_argument("--tls", action="store_true", help="serve HTTPS with a generated CA (kubectl sends tokens only over TLS)")
    serve.add_argument("--state", metavar="FILE", help="keep every object here across restarts (resourceVersions keep increasing)")
    serve.add_argument("--tls-dir", metavar="DIR", help="serve HTTPS with the CA and certificate kept in DIR (made on first use)")
    serve.add_argument("--time-scale", type=float, default=1.0, help="simulated seconds per real second")
    serve.add_argument("--ingress-port", type=int, default=None,
                       help="also serve the cluster's Ingress rules on this port, with external auth (0: a free port)")
    args = parser.parse_args(argv)

    sim = KubeSim(cluster=args.cluster, host=args.host, port=args.port, tokens=args.token or (DEFAULT_TOKEN,),
                  tls=args.tls, time_scale=args.time_scale, state_file=args.state, tls_dir=args.tls_dir,
                  ingress_port=args.ingress_port).start()
    if args.kubeconfig:
        sim.write_kubeconfig(args.kubeconfig)
    print(f"kubesim serving {sim.url}" + (f", kubeconfig {args.kubeconfig}" if args.kubeconfig else "")
          + (f", ingress on http://{args.host}:{sim.ingress_port}" if sim.ingress is not None else ""), flush=True)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    done.wait()
    sim.stop()


if __name__ == "__main__":
    main()

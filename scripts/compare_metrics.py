"""compare_metrics.py A B [--tol T]: every per-volume metrics.csv under two output folders (of
scripts/check_unchanged.sh), matched by path: the largest difference per metric; exit 1 above tol."""
import csv, sys, argparse
from pathlib import Path
p = argparse.ArgumentParser(); p.add_argument("a"); p.add_argument("b"); p.add_argument("--tol", type=float, default=1e-6)
p.add_argument("--only", nargs="*", default=None)
args = p.parse_args()
bad = 0
for fa in sorted(Path(args.a).rglob("metrics.csv")):
    rel = fa.relative_to(args.a)
    if args.only and not any(str(rel).startswith(o) for o in args.only): continue
    fb = Path(args.b) / rel
    if not fb.is_file(): print(f"{rel}: missing in B"); bad += 1; continue
    ra = {(r["method"], r["acceleration"], r["volume"]): r for r in csv.DictReader(open(fa))}
    rb = {(r["method"], r["acceleration"], r["volume"]): r for r in csv.DictReader(open(fb))}
    if ra.keys() != rb.keys(): print(f"{rel}: rows differ"); bad += 1; continue
    worst = {m: max(abs(float(ra[k][m]) - float(rb[k][m])) for k in ra) for m in ("ssim", "psnr", "nmse")}
    flag = "" if max(worst["ssim"], worst["nmse"]) <= args.tol and worst["psnr"] <= args.tol * 100 else "  > tol"
    bad += bool(flag)
    print(f"{rel}: {len(ra)} rows, max |diff| ssim {worst['ssim']:.2e} psnr {worst['psnr']:.2e} nmse {worst['nmse']:.2e}{flag}")
sys.exit(1 if bad else 0)

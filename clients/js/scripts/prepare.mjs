// `npm run prepare`: builds dist/ (tsc) when the package is installed from a folder or a git
// clone, packed, or `npm ci`-ed here. A fresh clone has no node_modules: the build tools
// (devDependencies, pinned by package-lock.json) are installed first with `npm ci`.
import { execFileSync } from "node:child_process";
import { existsSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const dir = join(dirname(fileURLToPath(import.meta.url)), "..");
const npm = process.platform === "win32" ? "npm.cmd" : "npm";
const tsc = join(dir, "node_modules", "typescript", "bin", "tsc");
if (!existsSync(tsc)) {
  console.error("@quotecast/client: installing the build tools (npm ci) to build dist/");
  execFileSync(npm, ["ci", "--ignore-scripts", "--no-audit", "--no-fund"], { cwd: dir, stdio: "inherit" });
}
execFileSync(process.execPath, [tsc, "-p", "tsconfig.json"], { cwd: dir, stdio: "inherit" });

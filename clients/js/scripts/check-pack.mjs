// `npm run check:pack` (CI): what `npm pack` would publish is a usable package. Every
// `exports` target (code and types) is in it, README.md and LICENSE (the repository's, same
// bytes) are in it, and nothing else but dist/, src/ and package.json: no tests, no scripts,
// no node_modules. Run after the build (dist/ must exist).
import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const dir = join(dirname(fileURLToPath(import.meta.url)), "..");
const pkg = JSON.parse(readFileSync(join(dir, "package.json"), "utf8"));
const out = execFileSync("npm", ["pack", "--dry-run", "--json", "--ignore-scripts"], { cwd: dir, encoding: "utf8" });
const files = new Set(JSON.parse(out)[0].files.map((f) => f.path));
const problems = [];

const wanted = new Set(["package.json", "README.md", "LICENSE", pkg.main.replace(/^\.\//, ""), pkg.types.replace(/^\.\//, "")]);
for (const [entry, conds] of Object.entries(pkg.exports)) {
  for (const [cond, target] of Object.entries(conds)) {
    if (typeof target !== "string") problems.push(`exports["${entry}"].${cond} is not a path`);
    else wanted.add(target.replace(/^\.\//, ""));
  }
  if (!conds.types || !conds.import) problems.push(`exports["${entry}"] needs both "types" and "import"`);
}
for (const f of wanted) if (!files.has(f)) problems.push(`missing from the package: ${f}`);
for (const f of files) {
  if (!/^(dist|src)\//.test(f) && !["package.json", "README.md", "LICENSE"].includes(f)) problems.push(`unexpected file in the package: ${f}`);
}
const license = readFileSync(join(dir, "LICENSE"), "utf8");
if (license !== readFileSync(join(dir, "..", "..", "LICENSE"), "utf8")) problems.push("LICENSE differs from the repository's LICENSE");
if (!pkg.peerDependenciesMeta?.react?.optional) problems.push("react must be an optional peer dependency");
if (pkg.dependencies?.react) problems.push("react must not be a dependency (one copy of React, the app's)");
if (!pkg.scripts?.prepare) problems.push("a prepare script must build dist/ on install from a folder or git");

if (problems.length) {
  console.error(`npm pack content is wrong:\n  ${problems.join("\n  ")}`);
  process.exit(1);
}
console.log(`npm pack: ${files.size} files, every exports target present, README.md and LICENSE included`);

// Bundles the tsc output (dist/browser.js and its imports) into the one ESM file the
// built-in board serves as /quotecast.js. The server embeds that file with include_bytes!,
// so it is committed, and `cargo build` needs no Node.
//
//   node scripts/bundle-board.mjs OUT          write OUT
//   node scripts/bundle-board.mjs --check OUT  fail if OUT differs from a fresh build
import { build } from "esbuild";
import { readFileSync, writeFileSync } from "node:fs";
import { fileURLToPath } from "node:url";

const args = process.argv.slice(2);
const check = args[0] === "--check";
const out = args[check ? 1 : 0];
if (!out) {
  console.error("usage: bundle-board.mjs [--check] OUT");
  process.exit(2);
}
const entry = fileURLToPath(new URL("../dist/browser.js", import.meta.url));
const res = await build({
  entryPoints: [entry],
  bundle: true,
  format: "esm",
  target: "es2020",
  platform: "browser",
  write: false,
  legalComments: "none",
  banner: {
    js: "// GENERATED from clients/js by `npm run build:board`; do not edit. @quotecast/client for the built-in board.",
  },
});
const code = res.outputFiles[0].text;
if (check) {
  let committed = "";
  try {
    committed = readFileSync(out, "utf8");
  } catch {}
  if (committed !== code) {
    console.error(`${out} is out of date: run \`npm run build:board\` in clients/js and commit it`);
    process.exit(1);
  }
  console.log(`${out} is up to date`);
} else {
  writeFileSync(out, code);
  console.log(`wrote ${out} (${code.length} bytes)`);
}

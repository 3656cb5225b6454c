// `npm pack --dry-run`, checked: the package holds the ESM entry, its type declarations and the README,
// and no tests, sources or specs.
import { execFileSync } from "node:child_process";

const [pack] = JSON.parse(execFileSync("npm", ["pack", "--dry-run", "--json", "--ignore-scripts"], { encoding: "utf8" }));
const files = new Set(pack.files.map((f) => f.path));
const missing = ["dist/index.js", "dist/index.d.ts", "dist/rest.js", "dist/stream.js", "README.md", "package.json"].filter((f) => !files.has(f));
const stray = [...files].filter((f) => /^(src|test|build|spec|node_modules)\//.test(f) || f.endsWith(".test.js"));
if (missing.length || stray.length) {
  console.error(`npm pack: missing ${missing.join(", ") || "nothing"}; should not hold ${stray.join(", ") || "nothing"}`);
  process.exit(1);
}
console.log(`npm pack: ${pack.name}@${pack.version}, ${files.size} files, ${pack.size} bytes`);

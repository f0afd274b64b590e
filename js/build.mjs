// Bundle every view in js/src/views/*.ts into mi_widgets/static/<view>.js (+ <view>.css when the
// view imports CSS), and each page script in js/src/pages/*.ts into mi_widgets/static/<page>.js.
// `node js/build.mjs --watch` rebuilds on change for ANYWIDGET_HMR=1 dev loops.
import { readdirSync, statSync } from "node:fs";
import { basename, dirname, join, relative } from "node:path";
import { fileURLToPath } from "node:url";
import * as esbuild from "esbuild";

const here = dirname(fileURLToPath(import.meta.url));
const viewsDir = join(here, "src", "views");
const outdir = join(here, "..", "mi_widgets", "static");
const watch = process.argv.includes("--watch");

const pagesDir = join(here, "src", "pages"); // scripts of pages mi_widgets writes (the HTML export)
const entryPoints = [viewsDir, pagesDir].flatMap((dir) =>
  readdirSync(dir)
    .filter((f) => f.endsWith(".ts") && !f.endsWith(".d.ts"))
    .map((f) => join(dir, f)),
);

/** Print the size of every file the build wrote. */
const reportSizes = {
  name: "report-sizes",
  setup(build) {
    build.onEnd((result) => {
      if (result.errors.length) return;
      for (const file of Object.keys(result.metafile?.outputs ?? {}).sort()) {
        const kb = (statSync(file).size / 1024).toFixed(1);
        console.log(`${relative(process.cwd(), file).padEnd(40)} ${kb.padStart(7)} KB`);
      }
    });
  },
};

const options = {
  entryPoints,
  outdir,
  entryNames: "[name]",
  bundle: true,
  format: "esm",
  minify: true,
  target: "es2020",
  metafile: true,
  legalComments: "none",
  logLevel: "warning",
  plugins: [reportSizes],
};

if (watch) {
  const ctx = await esbuild.context(options);
  await ctx.watch();
  console.log(`watching ${entryPoints.map((p) => basename(p)).join(", ")} -> ${relative(process.cwd(), outdir)}`);
} else {
  await esbuild.build(options);
}

// Validate an AsyncAPI document with the official parser.
//
//   node tests/asyncapi/validate.mjs DOCUMENT   (a .json or .yaml file; "-" reads stdin)
//
// Prints one line per diagnostic ("error|warning|info|hint <code> <path>: <message>") and
// exits with 1 if any diagnostic is an error, 2 if the document cannot be read.
import { readFileSync } from "node:fs";
import { Parser } from "@asyncapi/parser";

const SEVERITIES = ["error", "warning", "info", "hint"];

const target = process.argv[2];
if (!target) {
  console.error("usage: node validate.mjs DOCUMENT");
  process.exit(2);
}

let text;
try {
  text = readFileSync(target === "-" ? 0 : target, "utf8");
} catch (error) {
  console.error(`cannot read ${target}: ${error.message}`);
  process.exit(2);
}

const parser = new Parser();
const { document, diagnostics } = await parser.parse(text);

let errors = 0;
for (const diagnostic of diagnostics) {
  const severity = SEVERITIES[diagnostic.severity] ?? String(diagnostic.severity);
  if (severity === "error") {
    errors += 1;
  }
  const where = (diagnostic.path ?? []).join("/") || "(document)";
  console.log(`${severity} ${diagnostic.code} ${where}: ${diagnostic.message}`);
}
if (document === undefined && errors === 0) {
  console.log("error parser the document could not be parsed");
  errors += 1;
}
console.log(`${errors} error(s), ${diagnostics.length} diagnostic(s)`);
process.exit(errors > 0 ? 1 : 0);

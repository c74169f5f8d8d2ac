// Validates the published contracts: the AsyncAPI document (with every referenced JSON
// Schema) and the OpenAPI document. Exits non-zero on any error, so `make test` fails when a
// document is broken.
import { Parser, fromFile } from '@asyncapi/parser';
import { validate } from '@readme/openapi-parser';
import { fileURLToPath } from 'node:url';
import path from 'node:path';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../docs/contracts');
let failed = false;

const parser = new Parser();
const { document, diagnostics } = await fromFile(parser, path.join(root, 'asyncapi.yaml')).parse();
const errors = diagnostics.filter((d) => d.severity === 0);
for (const d of diagnostics.filter((d) => d.severity <= 1)) {
  console.error(`asyncapi.yaml ${d.severity === 0 ? 'error' : 'warning'}: ${d.message} at ${d.path.join('.')}`);
}
if (!document || errors.length > 0) {
  failed = true;
} else {
  const channels = document.channels().length;
  const messages = document.components().messages().length;
  console.log(`asyncapi.yaml: valid (${channels} channels, ${messages} messages)`);
}

const result = await validate(path.join(root, 'openapi.yaml'));
if (result.valid) {
  console.log('openapi.yaml: valid');
} else {
  failed = true;
  for (const e of result.errors) console.error(`openapi.yaml error: ${e.message ?? JSON.stringify(e)}`);
}
process.exit(failed ? 1 : 0);

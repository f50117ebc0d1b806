// `npm run lint` of exercise 6.2, without dependencies: every .js file must parse (node --check)
// and use no `var`.
const { execFileSync } = require('child_process');
const fs = require('fs');
const path = require('path');

const files = [];
(function walk(dir) {
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    if (e.name === 'node_modules' || e.name === 'dist') continue;
    const p = path.join(dir, e.name);
    if (e.isDirectory()) walk(p);
    else if (p.endsWith('.js')) files.push(p);
  }
})('.');
let bad = 0;
for (const f of files) {
  execFileSync(process.execPath, ['--check', f]);
  if (/^\s*var\s/m.test(fs.readFileSync(f, 'utf8'))) {
    console.error(`${f}: use let or const, not var`);
    bad++;
  }
}
console.log(`lint: ${files.length} files, ${bad} problems`);
process.exit(bad ? 1 : 0);

// Structural OpenAPI schemas for the Kubernetes types our CRDs embed (Affinity, Toleration, ...),
// derived from @kubernetes/client-node's generated models: the runtime `attributeTypeMap` gives
// names, types and formats, the `.d.ts` JSDoc gives descriptions and `?` marks optional fields.
// Embedding the real shapes (not `x-kubernetes-preserve-unknown-fields`) lets the API server
// validate them and lets `kubectl explain` describe every nested field.
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import ts from 'typescript';
import * as k8s from '@kubernetes/client-node';

import type { JsonSchema } from '../schema-dsl.ts';
import { QUANTITY_SCHEMA } from '../schema-dsl.ts';

interface Attribute {
  name: string;
  baseName: string;
  type: string;
  format: string;
}
interface ModelClass {
  attributeTypeMap: Attribute[];
}

interface ModelDocs {
  description: string;
  fields: Map<string, { description: string; optional: boolean }>;
}

const modelsDir = join(
  dirname(createRequire(import.meta.url).resolve('@kubernetes/client-node')),
  'gen',
  'models',
);

function jsDocText(node: ts.Node): string {
  const docs = (node as { jsDoc?: ts.JSDoc[] }).jsDoc ?? [];
  return docs
    .map((d) => (typeof d.comment === 'string' ? d.comment : (ts.getTextOfJSDocComment(d.comment) ?? '')))
    .join('\n')
    .replace(/\\'/g, "'")
    .trim();
}

export function readModelDocs(model: string): ModelDocs {
  const file = join(modelsDir, `${model}.d.ts`);
  const source = ts.createSourceFile(file, readFileSync(file, 'utf8'), ts.ScriptTarget.Latest, true);
  let result: ModelDocs | undefined;
  source.forEachChild((node) => {
    if (!ts.isClassDeclaration(node) || node.name?.text !== model) return;
    const fields = new Map<string, { description: string; optional: boolean }>();
    for (const member of node.members) {
      if (!ts.isPropertyDeclaration(member) || !member.name) continue;
      if (member.modifiers?.some((m) => m.kind === ts.SyntaxKind.StaticKeyword)) continue;
      const name = ts.isStringLiteral(member.name) ? member.name.text : member.name.getText(source);
      fields.set(name, { description: jsDocText(member), optional: member.questionToken !== undefined });
    }
    result = { description: jsDocText(node), fields };
  });
  if (!result) throw new Error(`no class ${model} in ${file}`);
  return result;
}

function modelClass(model: string): ModelClass {
  const cls = (k8s as unknown as Record<string, ModelClass | undefined>)[model];
  if (!cls?.attributeTypeMap) throw new Error(`@kubernetes/client-node has no model ${model}`);
  return cls;
}

/** Field types whose values are resource quantities ("500m", "8Gi", 2): int-or-string in the API. */
const QUANTITY_MAPS = new Set(['V1ResourceRequirements.limits', 'V1ResourceRequirements.requests']);

function schemaForType(type: string, format: string, path: string): JsonSchema {
  const array = /^Array<(.+)>$/.exec(type);
  if (array?.[1]) return { type: 'array', items: schemaForType(array[1], format, path) };
  const map = /^\{ \[key: string\]: (.+); \}$/.exec(type);
  if (map?.[1]) {
    const values = QUANTITY_MAPS.has(path) ? QUANTITY_SCHEMA : schemaForType(map[1], format, path);
    return { type: 'object', additionalProperties: values };
  }
  switch (type) {
    case 'string':
      return { type: 'string' };
    case 'boolean':
      return { type: 'boolean' };
    case 'number':
      return format === 'int32' || format === 'int64' ? { type: 'integer', format } : { type: 'number' };
    default:
      if (/^(V1|CoreV1)[A-Za-z0-9]+$/.test(type)) return modelSchema(type);
      throw new Error(`unsupported client-node attribute type ${type} at ${path}`);
  }
}

/** The structural schema of one client-node model, with descriptions, recursively. */
export function modelSchema(model: string): JsonSchema {
  const docs = readModelDocs(model);
  const properties: Record<string, JsonSchema> = {};
  const required: string[] = [];
  for (const attr of modelClass(model).attributeTypeMap) {
    const field = docs.fields.get(attr.name);
    const schema = schemaForType(attr.type, attr.format, `${model}.${attr.name}`);
    properties[attr.baseName] = { description: field?.description || attr.baseName, ...schema };
    if (field && !field.optional) required.push(attr.baseName);
  }
  return {
    description: docs.description,
    type: 'object',
    properties,
    ...(required.length ? { required } : {}),
  };
}

/** The embedded Kubernetes types, keyed by the client-node type name the TS types use. */
export const EMBEDDED_MODELS = [
  'V1ResourceRequirements',
  'V1Toleration',
  'V1Affinity',
  'V1TopologySpreadConstraint',
] as const;
export type EmbeddedModel = (typeof EMBEDDED_MODELS)[number];

export function generateK8sSchemas(): Record<EmbeddedModel, JsonSchema> {
  const out = {} as Record<EmbeddedModel, JsonSchema>;
  for (const model of EMBEDDED_MODELS) out[model] = modelSchema(model);
  return out;
}

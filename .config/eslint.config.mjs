// ESLint flat config for ringbridge (type-aware typescript-eslint rules on src, test and load).
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import js from '@eslint/js';
import globals from 'globals';
import tseslint from 'typescript-eslint';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

export default tseslint.config(
  {
    ignores: ['dist/**', 'node_modules/**', 'coverage/**', 'src/web/dist/**', 'load/reports/**'],
  },
  {
    files: ['**/*.mjs', '**/*.js'],
    extends: [js.configs.recommended],
    languageOptions: { globals: { ...globals.node }, sourceType: 'module' },
    rules: {
      curly: ['error', 'all'],
      'no-console': 'error',
    },
  },
  {
    files: ['**/*.ts'],
    extends: [js.configs.recommended, ...tseslint.configs.recommendedTypeChecked],
    languageOptions: {
      globals: { ...globals.node },
      parserOptions: {
        project: [path.join(root, '.config', 'tsconfig.check.json')],
        tsconfigRootDir: root,
      },
    },
    rules: {
      curly: ['error', 'all'],
      eqeqeq: ['error', 'always', { null: 'ignore' }],
      'no-console': 'error',
      '@typescript-eslint/no-floating-promises': 'error',
      '@typescript-eslint/no-misused-promises': ['error', { checksVoidReturn: { arguments: false, attributes: false } }],
      '@typescript-eslint/consistent-type-imports': ['error', { fixStyle: 'inline-type-imports' }],
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_', caughtErrors: 'none' }],
      '@typescript-eslint/restrict-template-expressions': ['error', { allowNumber: true, allowBoolean: true, allowNullish: true }],
    },
  },
  {
    // The softphone page runs in browsers: DOM globals, and its own tsconfig (DOM lib, bundler resolution).
    files: ['src/web/**/*.ts'],
    languageOptions: {
      globals: { ...globals.browser },
      parserOptions: {
        project: [path.join(root, '.config', 'tsconfig.web.json')],
        tsconfigRootDir: root,
      },
    },
  },
  {
    // The page's service worker: worker globals and its own tsconfig (WebWorker lib).
    files: ['src/web/sw/**/*.ts'],
    languageOptions: {
      globals: { ...globals.serviceworker },
      parserOptions: {
        project: [path.join(root, '.config', 'tsconfig.sw.json')],
        tsconfigRootDir: root,
      },
    },
  },
  {
    files: ['src/web/**/*.mjs'],
    languageOptions: { globals: { ...globals.node } },
  },
  {
    // Tests and load tools print to the console on purpose and poke at loosely typed data.
    files: ['test/**/*.ts', 'load/**/*.ts'],
    rules: {
      'no-console': 'off',
      '@typescript-eslint/no-unsafe-assignment': 'off',
      '@typescript-eslint/no-unsafe-member-access': 'off',
      '@typescript-eslint/no-non-null-assertion': 'off',
    },
  },
);
